"""Loading the config: paths, the embedded default, env and flags, startup guards (config.md)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import threading
from pathlib import Path

import json5
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.config import ModelRef
from gateway.cli import _parser
from gateway.config.errors import EMBEDDED_DEFAULT, ConfigError, ConfigIssue
from gateway.config.loader import ConfigLoader
from gateway.config.model import Config, ConfigWarning
from gateway.config.overrides import Overrides
from gateway.config.view import effective_dict
from gateway.statedir import MAX_CONFIG_BYTES
from tests.support.configs import ConfigFiles
from tests.support.strategies import fuzz

REPO = Path(__file__).resolve().parents[2]

FULL = """
// Every section, with values that differ from the defaults.
{
  gateway: {
    port: 18800,
    bind: "lan",
    auth: {
      mode: "token",
      token: "file-token-long-enough",
      rateLimit: { maxAttempts: 5, windowMs: 1000, lockoutMs: 2000, exemptLoopback: false },
    },
    http: {
      endpoints: {
        chatCompletions: {
          enabled: true,
          maxBodyBytes: 1000,
          maxImageParts: 2,
          maxTotalImageBytes: 3000,
          images: { maxBytes: 500, allowedMimes: ["image/png"], urlAllowlist: ["a.example"],
                    maxRedirects: 1, timeoutMs: 2 },
        },
      },
      cors: { allowedOrigins: ["https://app.example"] },
    },
    shutdown: { drainSeconds: 5 },
    reload: { mode: "hot", debounceMs: 50 },
  },
  agents: {
    defaults: { model: "local/qwen", timeoutSeconds: 600, maxConcurrent: 2, historyLimit: 10 },
    list: [
      { id: "Main", default: true, name: "Echo", model: "echo/echo", params: { delayMs: 5 } },
      {
        id: "coder",
        model: { primary: "local/qwen", fallbacks: ["claude/sonnet"] },
        systemPrompt: "Be brief.",
        params: { temperature: 0.2, max_tokens: 100, top_k: 40 },
      },
      { id: "plain" },
    ],
  },
  models: {
    providers: {
      local: {
        baseUrl: "http://127.0.0.1:11434/v1",
        models: [{ id: "qwen", contextWindow: 32768, maxTokens: 4096 }],
      },
      claude: {
        api: "anthropic-messages",
        apiKey: "sk-ant",
        headers: { "anthropic-beta": "x" },
        models: [{ id: "sonnet", name: "Sonnet", reasoning: true }],
      },
    },
  },
  session: { mainKey: "Home", maintenance: { mode: "enforce", pruneAfter: "12h", maxEntries: 9 } },
  logging: { level: "debug", format: "json" },
}
"""


class TestEmbeddedDefault:
    def test_is_used_when_the_default_path_has_no_file(self, tmp_path: Path) -> None:
        loader = ConfigLoader(Overrides(state_dir=str(tmp_path / "state")), environ={})
        config = loader.load()
        assert config.source.path == tmp_path / "state" / "clawgate.json5"
        assert (config.source.exists, config.source.raw, config.source.hash) == (False, None, None)
        assert config.source.parsed is None

    def test_listens_on_loopback_port_18789(self, tmp_path: Path) -> None:
        config = ConfigLoader(Overrides(state_dir=str(tmp_path)), environ={}).load()
        assert (config.gateway.host, config.gateway.port) == ("127.0.0.1", 18789)

    def test_has_agent_main_on_echo(self, tmp_path: Path) -> None:
        config = ConfigLoader(Overrides(state_dir=str(tmp_path)), environ={}).load()
        (agent,) = config.agents.agents
        assert (agent.id, agent.models, agent.default) == (
            "main",
            (ModelRef("echo", "echo"),),
            True,
        )

    def test_enables_chat_completions(self, tmp_path: Path) -> None:
        config = ConfigLoader(Overrides(state_dir=str(tmp_path)), environ={}).load()
        assert config.gateway.http.chat_completions.enabled is True

    def test_uses_token_auth_with_no_token_yet(self, tmp_path: Path) -> None:
        auth = ConfigLoader(Overrides(state_dir=str(tmp_path)), environ={}).load().gateway.auth
        assert (auth.mode, auth.token, auth.source) == ("token", None, None)

    def test_loads_without_warnings(self, tmp_path: Path) -> None:
        config = ConfigLoader(Overrides(state_dir=str(tmp_path)), environ={}).load()
        assert config.warnings == ()

    def test_prunes_sessions_by_default(self, tmp_path: Path) -> None:
        config = ConfigLoader(Overrides(state_dir=str(tmp_path)), environ={}).load()
        assert effective_dict(config)["session"]["maintenance"] == {
            "mode": "enforce",
            "pruneAfter": 30 * 86_400_000,
            "maxEntries": 500,
            "statelessTtl": 24 * 3_600_000,
            "maxDiskBytes": 1024**3,
            "highWaterBytes": 1024**3 * 8 // 10,
        }

    def test_loading_creates_nothing_on_disk(self, tmp_path: Path) -> None:
        ConfigLoader(Overrides(state_dir=str(tmp_path / "state")), environ={}).load()
        assert list(tmp_path.iterdir()) == []

    def test_takes_env_overrides_too(self, tmp_path: Path) -> None:
        environ = {"OPENCLAW_GATEWAY_PORT": "19000"}
        config = ConfigLoader(Overrides(state_dir=str(tmp_path)), environ=environ).load()
        assert config.gateway.port == 19000

    def test_issue_location_is_the_embedded_default(self, tmp_path: Path) -> None:
        environ = {"OPENCLAW_GATEWAY_PORT": "x"}
        with pytest.raises(ConfigError) as caught:
            ConfigLoader(Overrides(state_dir=str(tmp_path)), environ=environ).load()
        assert caught.value.location == EMBEDDED_DEFAULT


class TestPaths:
    def test_state_dir_defaults_to_dot_clawgate_in_home(self, tmp_path: Path) -> None:
        loader = ConfigLoader(environ={"HOME": str(tmp_path)})
        assert loader.state_dir == tmp_path / ".clawgate"

    def test_state_dir_from_env(self, tmp_path: Path) -> None:
        environ = {"HOME": str(tmp_path), "CLAWGATE_STATE_DIR": str(tmp_path / "env")}
        assert ConfigLoader(environ=environ).state_dir == tmp_path / "env"

    def test_state_dir_flag_wins_over_env(self, tmp_path: Path) -> None:
        environ = {"CLAWGATE_STATE_DIR": str(tmp_path / "env")}
        loader = ConfigLoader(Overrides(state_dir=str(tmp_path / "flag")), environ=environ)
        assert loader.state_dir == tmp_path / "flag"

    def test_config_path_defaults_to_the_state_dir(self, tmp_path: Path) -> None:
        loader = ConfigLoader(Overrides(state_dir=str(tmp_path)), environ={})
        assert (loader.config_path, loader.explicit_path) == (tmp_path / "clawgate.json5", False)

    def test_config_path_from_env_is_explicit(self, tmp_path: Path) -> None:
        loader = ConfigLoader(environ={"CLAWGATE_CONFIG": str(tmp_path / "env.json5")})
        assert (loader.config_path, loader.explicit_path) == (tmp_path / "env.json5", True)

    def test_config_path_flag_wins_over_env(self, tmp_path: Path) -> None:
        environ = {"CLAWGATE_CONFIG": str(tmp_path / "env.json5")}
        loader = ConfigLoader(Overrides(config_path=str(tmp_path / "f.json5")), environ=environ)
        assert (loader.config_path, loader.explicit_path) == (tmp_path / "f.json5", True)

    def test_tilde_is_expanded(self, tmp_path: Path) -> None:
        environ = {"HOME": str(tmp_path), "CLAWGATE_STATE_DIR": "~/state"}
        loader = ConfigLoader(Overrides(config_path="~/conf/c.json5"), environ=environ)
        assert (loader.state_dir, loader.config_path) == (
            tmp_path / "state",
            tmp_path / "conf" / "c.json5",
        )

    def test_relative_paths_are_relative_to_the_working_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        loader = ConfigLoader(Overrides(config_path="sub/../c.json5", state_dir="s"), environ={})
        assert (loader.config_path, loader.state_dir) == (tmp_path / "c.json5", tmp_path / "s")

    def test_empty_env_variable_counts_as_unset(self, tmp_path: Path) -> None:
        environ = {"HOME": str(tmp_path), "CLAWGATE_STATE_DIR": " ", "CLAWGATE_CONFIG": ""}
        loader = ConfigLoader(environ=environ)
        assert (loader.state_dir, loader.explicit_path) == (tmp_path / ".clawgate", False)


class TestMissingExplicitConfig:
    def test_from_the_flag_is_an_error(self, tmp_path: Path) -> None:
        path = tmp_path / "nope.json5"
        with pytest.raises(ConfigError) as caught:
            ConfigLoader(Overrides(config_path=str(path)), environ={}).load()
        assert caught.value.render() == (
            f"Invalid config at {path}:\n- <file>: config file not found: {path}"
        )

    def test_from_the_env_is_an_error(self, tmp_path: Path) -> None:
        path = tmp_path / "nope.json5"
        with pytest.raises(ConfigError) as caught:
            ConfigLoader(environ={"CLAWGATE_CONFIG": str(path)}).load()
        assert caught.value.issues == (ConfigIssue("<file>", f"config file not found: {path}"),)


class TestSource:
    def test_records_the_file_text_and_hash(self, files: ConfigFiles) -> None:
        text = "{gateway: {port: 18790}} // comment\n"
        config = files.load(text)
        assert config.source.path == files.path
        assert config.source.exists is True
        assert config.source.raw == text
        assert config.source.hash == hashlib.sha256(text.encode()).hexdigest()

    def test_parsed_is_before_substitution(self, files: ConfigFiles) -> None:
        config = files.load('{gateway: {auth: {token: "${TOKEN}"}}}', environ={"TOKEN": "secret"})
        assert config.source.parsed == {"gateway": {"auth": {"token": "${TOKEN}"}}}
        assert config.gateway.auth.token == "secret"

    def test_a_byte_order_mark_is_accepted(self, files: ConfigFiles) -> None:
        files.path.write_bytes(b"\xef\xbb\xbf{gateway: {port: 18790}}")
        assert files.loader().load().gateway.port == 18790

    def test_unreadable_file_is_a_file_level_issue(self, files: ConfigFiles) -> None:
        files.path.mkdir()
        with pytest.raises(ConfigError) as caught:
            files.loader().load()
        (issue,) = caught.value.issues
        assert issue.path == "<file>"
        assert issue.message.startswith("cannot read config file: ")

    def test_a_fifo_is_a_file_level_issue_not_a_wait_for_a_writer(self, files: ConfigFiles) -> None:
        """A FIFO (or a device: /dev/zero never ends) named as the config would hold `run`,
        a reload or config.patch for ever; only a regular file is read."""
        os.mkfifo(files.path)
        caught: list[ConfigError] = []

        def load() -> None:
            try:
                files.loader().load()
            except ConfigError as exc:
                caught.append(exc)

        reader = threading.Thread(target=load)
        reader.start()
        reader.join(5)
        release_fifo_reader(files.path)
        reader.join()
        assert caught[0].issues == (
            ConfigIssue("<file>", "cannot read config file: not a regular file"),
        )

    def test_a_file_larger_than_a_config_may_be_is_a_file_level_issue(
        self, files: ConfigFiles
    ) -> None:
        """Unread and unparsed: json5 would take hours over a stray 500 MB file."""
        files.write("{}" + " " * (MAX_CONFIG_BYTES - 1))
        with pytest.raises(ConfigError) as caught:
            files.loader().load()
        message = (
            f"cannot read config file: it has {MAX_CONFIG_BYTES + 1} bytes,"
            f" more than the {MAX_CONFIG_BYTES} a config file may hold"
        )
        assert caught.value.issues == (ConfigIssue("<file>", message),)

    def test_so_is_one_in_the_state_dir(self, files: ConfigFiles) -> None:
        files.state_dir.mkdir(mode=0o700)
        path = files.state_dir / "clawgate.json5"
        path.write_text("{}" + " " * (MAX_CONFIG_BYTES - 1))
        loader = ConfigLoader(Overrides(state_dir=str(files.state_dir)), environ={})
        assert loader.config_path == path
        with pytest.raises(ConfigError) as caught:
            loader.load()
        (issue,) = caught.value.issues
        assert issue.message.endswith(f"more than the {MAX_CONFIG_BYTES} a config file may hold")

    def test_a_file_of_the_largest_size_loads(self, files: ConfigFiles) -> None:
        files.write("{}" + " " * (MAX_CONFIG_BYTES - 2))
        assert files.loader().load().source.hash is not None

    def test_a_candidate_text_larger_than_a_config_may_be_is_an_issue(
        self, files: ConfigFiles
    ) -> None:
        """What config.patch would write: the next load would refuse the file."""
        with pytest.raises(ConfigError) as caught:
            files.loader().load_text("{}" + " " * (MAX_CONFIG_BYTES - 1))
        message = (
            f"it has {MAX_CONFIG_BYTES + 1} bytes, more than the {MAX_CONFIG_BYTES}"
            " a config file may hold"
        )
        assert caught.value.issues == (ConfigIssue("<file>", message),)

    def test_invalid_utf8_is_a_file_level_issue(self, files: ConfigFiles) -> None:
        files.path.write_bytes(b'{gateway: {bind: "\xff"}}')
        with pytest.raises(ConfigError) as caught:
            files.loader().load()
        assert caught.value.issues == (ConfigIssue("<file>", "not valid UTF-8 (byte 18)"),)


def release_fifo_reader(path: Path) -> None:
    """End a read that waits on the FIFO at `path` (an open for writing, closed at once: EOF)."""
    with contextlib.suppress(OSError):  # ENXIO: no reader waiting
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


class TestLoadText:
    def test_checks_candidate_text_without_a_file(self, files: ConfigFiles) -> None:
        config = files.loader().load_text("{gateway: {port: 18801}}")
        assert config.gateway.port == 18801
        assert not files.path.exists()

    def test_source_describes_the_candidate(self, files: ConfigFiles) -> None:
        text = '{logging: {level: "warn"}}'
        source = files.loader().load_text(text).source
        assert (source.path, source.exists, source.raw) == (files.path, True, text)
        assert source.hash == hashlib.sha256(text.encode()).hexdigest()

    def test_invalid_candidate_raises_at_the_config_path(self, files: ConfigFiles) -> None:
        with pytest.raises(ConfigError) as caught:
            files.loader().load_text('{gateway: {port: "x"}}')
        assert caught.value.render() == (
            f"Invalid config at {files.path}:\n- gateway.port: expected integer, got string"
        )


class TestValidFile:
    def test_gateway_section(self, files: ConfigFiles) -> None:
        gateway = files.load(FULL).gateway
        assert (gateway.port, gateway.bind, gateway.host) == (18800, "lan", "0.0.0.0")
        assert (gateway.drain_seconds, gateway.reload_mode, gateway.reload_debounce_ms) == (
            5,
            "hot",
            50,
        )
        assert gateway.http.cors_allowed_origins == ("https://app.example",)

    def test_auth_section(self, files: ConfigFiles) -> None:
        auth = files.load(FULL).gateway.auth
        assert (auth.mode, auth.token, auth.password, auth.source) == (
            "token",
            "file-token-long-enough",
            None,
            "config",
        )
        limit = auth.rate_limit
        assert (limit.max_attempts, limit.window_ms, limit.lockout_ms) == (5, 1000, 2000)
        assert limit.exempt_loopback is False

    def test_chat_completions_section(self, files: ConfigFiles) -> None:
        chat = files.load(FULL).gateway.http.chat_completions
        assert (chat.enabled, chat.max_body_bytes, chat.max_image_parts) == (True, 1000, 2)
        assert chat.max_total_image_bytes == 3000
        images = chat.images
        assert (images.max_bytes, images.allowed_mimes, images.url_allowlist) == (
            500,
            ("image/png",),
            ("a.example",),
        )
        assert (images.max_redirects, images.timeout_ms) == (1, 2)

    def test_agents_section(self, files: ConfigFiles) -> None:
        agents = files.load(FULL).agents
        main, coder, plain = agents.agents
        assert (main.id, main.name, main.default, main.params) == (
            "main",
            "Echo",
            True,
            {"delayMs": 5},
        )
        assert coder.models == (ModelRef("local", "qwen"), ModelRef("claude", "sonnet"))
        assert coder.system_prompt == "Be brief."
        assert coder.params == {"temperature": 0.2, "max_tokens": 100, "top_k": 40}
        assert (plain.name, plain.models, plain.default) == (
            "plain",
            (ModelRef("local", "qwen"),),
            False,
        )
        assert (agents.timeout_seconds, agents.max_concurrent, agents.history_limit) == (600, 2, 10)
        assert agents.default_models == (ModelRef("local", "qwen"),)

    def test_models_section(self, files: ConfigFiles) -> None:
        providers = files.load(FULL).agents.providers
        local, claude = providers["local"], providers["claude"]
        assert (local.api, local.base_url, local.api_key) == (
            "openai-completions",
            "http://127.0.0.1:11434/v1",
            None,
        )
        (qwen,) = local.models
        assert (qwen.id, qwen.name, qwen.context_window, qwen.max_tokens) == (
            "qwen",
            "qwen",
            32768,
            4096,
        )
        assert (claude.api, claude.base_url, claude.api_key) == (
            "anthropic-messages",
            "https://api.anthropic.com",
            "sk-ant",
        )
        assert claude.headers == {"anthropic-beta": "x"}
        assert (claude.models[0].name, claude.models[0].reasoning) == ("Sonnet", True)

    def test_session_section(self, files: ConfigFiles) -> None:
        agents = files.load(FULL).agents
        assert agents.main_key == "home"
        maintenance = agents.maintenance
        assert (maintenance.mode, maintenance.prune_after_ms, maintenance.max_entries) == (
            "enforce",
            12 * 3600 * 1000,
            9,
        )

    def test_logging_section(self, files: ConfigFiles) -> None:
        logging = files.load(FULL).logging
        assert (logging.level, logging.format) == ("debug", "json")

    def test_loads_without_warnings(self, files: ConfigFiles) -> None:
        assert files.load(FULL).warnings == ()

    def test_state_dir_is_the_resolved_one(self, files: ConfigFiles) -> None:
        assert files.load("{}").state_dir == files.state_dir

    def test_empty_object_gives_every_default(self, files: ConfigFiles) -> None:
        config = files.load("{}")
        assert (config.gateway.port, config.gateway.bind) == (18789, "loopback")
        assert (
            config.gateway.http.chat_completions.enabled is False
        )  # only the embedded default enables it
        assert [a.id for a in config.agents.agents] == ["main"]
        assert config.agents.default_agent.models == (ModelRef("echo", "echo"),)


class TestEffectiveDict:
    def test_loading_it_gives_the_same_config(self, files: ConfigFiles) -> None:
        config = files.load(FULL)
        again = files.loader().load_text(json.dumps(effective_dict(config)))
        assert (again.gateway, again.agents, again.logging) == (
            config.gateway,
            config.agents,
            config.logging,
        )

    def test_fills_in_defaults(self, files: ConfigFiles) -> None:
        effective = effective_dict(files.load("{}"))
        assert effective["gateway"]["reload"] == {"mode": "hybrid", "debounceMs": 300}
        assert effective["gateway"]["metrics"] == {"enabled": True, "public": False}
        assert effective["session"]["maintenance"]["pruneAfter"] == 30 * 86_400_000
        assert effective["agents"]["list"] == [
            {
                "id": "main",
                "default": False,
                "name": "main",
                "model": "echo/echo",
                "systemPrompt": "",
                "params": {},
                "models": [],
            }
        ]

    def test_shows_values_from_env_and_flags(self, files: ConfigFiles) -> None:
        config = files.load("{}", environ={"OPENCLAW_GATEWAY_TOKEN": "t"}, port=0, bind="10.1.2.3")
        gateway = effective_dict(config)["gateway"]
        assert (gateway["port"], gateway["bind"], gateway["customBindHost"]) == (
            0,
            "custom",
            "10.1.2.3",
        )
        assert gateway["auth"]["token"] == "t"

    def test_shows_a_disabled_rate_limit_as_false(self, files: ConfigFiles) -> None:
        effective = effective_dict(files.load("{gateway: {auth: {rateLimit: false}}}"))
        assert effective["gateway"]["auth"]["rateLimit"] is False

    def test_shows_a_model_chain_as_primary_and_fallbacks(self, files: ConfigFiles) -> None:
        effective = effective_dict(files.load(FULL))
        assert effective["agents"]["list"][1]["model"] == {
            "primary": "local/qwen",
            "fallbacks": ["claude/sonnet"],
        }


class TestPortPrecedence:
    def test_default(self, files: ConfigFiles) -> None:
        assert files.load("{}").gateway.port == 18789

    def test_file_over_default(self, files: ConfigFiles) -> None:
        assert files.load("{gateway: {port: 18790}}").gateway.port == 18790

    def test_env_over_file(self, files: ConfigFiles) -> None:
        config = files.load(
            "{gateway: {port: 18790}}", environ={"OPENCLAW_GATEWAY_PORT": " 18791 "}
        )
        assert config.gateway.port == 18791

    def test_flag_over_env(self, files: ConfigFiles) -> None:
        environ = {"OPENCLAW_GATEWAY_PORT": "18791"}
        assert (
            files.load("{gateway: {port: 18790}}", environ=environ, port=18792).gateway.port
            == 18792
        )

    def test_flag_zero_picks_a_free_port(self, files: ConfigFiles) -> None:
        assert files.load("{}", port=0).gateway.port == 0

    def test_env_host_and_port_uses_the_port(self, files: ConfigFiles) -> None:
        config = files.load("{}", environ={"OPENCLAW_GATEWAY_PORT": "127.0.0.1:18793"})
        assert config.gateway.port == 18793

    @pytest.mark.parametrize("value", ["abc", "0", "70000", "18789x", "-1"])
    def test_invalid_env_port_is_an_issue(self, files: ConfigFiles, value: str) -> None:
        error = files.error("{}", environ={"OPENCLAW_GATEWAY_PORT": value})
        assert f'OPENCLAW_GATEWAY_PORT: not a valid port ("{value}")' in error.render()

    def test_invalid_env_port_is_not_read_when_the_flag_is_given(self, files: ConfigFiles) -> None:
        assert (
            files.load("{}", environ={"OPENCLAW_GATEWAY_PORT": "abc"}, port=18794).gateway.port
            == 18794
        )

    def test_flag_out_of_range_is_an_issue(self, files: ConfigFiles) -> None:
        assert files.issues("{}", port=70000) == [
            "- --port: must be between 0 and 65535 (got 70000)"
        ]


class TestSecretPrecedence:
    def test_token_from_the_file(self, files: ConfigFiles) -> None:
        auth = files.load('{gateway: {auth: {token: "file"}}}').gateway.auth
        assert (auth.token, auth.source) == ("file", "config")

    def test_env_token_over_the_file(self, files: ConfigFiles) -> None:
        environ = {"OPENCLAW_GATEWAY_TOKEN": "env"}
        auth = files.load('{gateway: {auth: {token: "file"}}}', environ=environ).gateway.auth
        assert (auth.token, auth.source) == ("env", "env")

    def test_flag_token_over_env(self, files: ConfigFiles) -> None:
        environ = {"OPENCLAW_GATEWAY_TOKEN": "env"}
        auth = files.load(
            '{gateway: {auth: {token: "f"}}}', environ=environ, token="flag"
        ).gateway.auth
        assert (auth.token, auth.source) == ("flag", "flag")

    def test_env_token_without_a_file_token(self, files: ConfigFiles) -> None:
        auth = files.load("{}", environ={"OPENCLAW_GATEWAY_TOKEN": " env "}).gateway.auth
        assert (auth.mode, auth.token, auth.source) == ("token", "env", "env")

    def test_password_from_the_file(self, files: ConfigFiles) -> None:
        auth = files.load('{gateway: {auth: {password: "file"}}}').gateway.auth
        assert (auth.mode, auth.password, auth.source) == ("password", "file", "config")

    def test_env_password_over_the_file(self, files: ConfigFiles) -> None:
        environ = {"OPENCLAW_GATEWAY_PASSWORD": "env"}
        auth = files.load('{gateway: {auth: {password: "file"}}}', environ=environ).gateway.auth
        assert (auth.password, auth.source) == ("env", "env")

    def test_flag_password_over_env(self, files: ConfigFiles) -> None:
        environ = {"OPENCLAW_GATEWAY_PASSWORD": "env"}
        auth = files.load("{}", environ=environ, password="flag").gateway.auth
        assert (auth.mode, auth.password, auth.source) == ("password", "flag", "flag")

    def test_empty_file_token_counts_as_unset(self, files: ConfigFiles) -> None:
        auth = files.load('{gateway: {auth: {token: ""}}}').gateway.auth
        assert (auth.token, auth.source) == (None, None)


class TestAuthMode:
    def test_token_when_nothing_is_set(self, files: ConfigFiles) -> None:
        assert files.load("{}").gateway.auth.mode == "token"

    def test_explicit_mode_is_kept(self, files: ConfigFiles) -> None:
        assert files.load('{gateway: {auth: {mode: "none"}}}').gateway.auth.mode == "none"

    def test_token_flag_implies_token_mode(self, files: ConfigFiles) -> None:
        environ = {"OPENCLAW_GATEWAY_PASSWORD": "env"}
        assert files.load("{}", environ=environ, token="t").gateway.auth.mode == "token"

    def test_a_token_flag_wins_over_the_files_mode_and_says_so(self, files: ConfigFiles) -> None:
        # CLI flag > environment > file, the mode too: refusing to start (78) left an operator
        # no way to override the file from the unit file.
        config = files.load('{gateway: {auth: {mode: "password", password: "p"}}}', token="t")
        auth = config.gateway.auth
        assert (auth.mode, auth.secret, auth.source) == ("token", "t", "flag")
        assert [(w.path, w.message) for w in config.warnings] == [
            ("--token", 'overrides gateway.auth.mode "password" of the config file: the gateway'
             " runs in token mode"),
        ]  # fmt: skip

    def test_a_password_flag_wins_over_the_files_none_mode(self, files: ConfigFiles) -> None:
        auth = files.load('{gateway: {auth: {mode: "none"}}}', password="p").gateway.auth
        assert (auth.mode, auth.secret, auth.source) == ("password", "p", "flag")

    def test_both_flags_beside_the_files_none_mode_is_an_issue(self, files: ConfigFiles) -> None:
        assert files.issues('{gateway: {auth: {mode: "none"}}}', token="t", password="p") == [
            '- --token: gateway.auth.mode is "none" in the config file and both --token and'
            ' --password are given; drop one of them, or set gateway.auth.mode to "token" or'
            ' "password"'
        ]

    def test_an_env_token_the_file_mode_does_not_use_is_no_issue(self, files: ConfigFiles) -> None:
        # An EnvironmentFile may carry both variables; only a flag is the operator's intent.
        text = '{gateway: {auth: {mode: "password", password: "p"}}}'
        auth = files.load(text, environ={"OPENCLAW_GATEWAY_TOKEN": "t"}).gateway.auth
        assert (auth.mode, auth.secret, auth.source) == ("password", "p", "config")

    def test_the_files_token_is_trimmed(self, files: ConfigFiles) -> None:
        auth = files.load('{gateway: {auth: {token: " t\\n"}}}').gateway.auth
        assert (auth.mode, auth.token) == ("token", "t")

    def test_a_token_file_is_read_on_every_load(self, files: ConfigFiles, tmp_path: Path) -> None:
        secret = tmp_path / "token"
        secret.write_text("first\n")
        loader = files.loader(token_file=str(secret))
        files.write("{}")
        assert loader.load().gateway.auth.token == "first"
        secret.write_text("rotated\n")
        assert loader.load().gateway.auth.token == "rotated"

    def test_password_flag_implies_password_mode(self, files: ConfigFiles) -> None:
        auth = files.load('{gateway: {auth: {token: "t"}}}', password="p").gateway.auth
        assert (auth.mode, auth.secret) == ("password", "p")

    def test_password_mode_without_a_password_is_an_issue(self, files: ConfigFiles) -> None:
        assert files.issues('{gateway: {auth: {mode: "password"}}}') == [
            "- gateway.auth.password: gateway auth mode is password, but no password was configured"
        ]

    def test_password_mode_with_an_env_password_loads(self, files: ConfigFiles) -> None:
        environ = {"OPENCLAW_GATEWAY_PASSWORD": "p"}
        auth = files.load('{gateway: {auth: {mode: "password"}}}', environ=environ).gateway.auth
        assert (auth.secret, auth.source) == ("p", "env")

    def test_token_and_password_without_a_mode_is_an_issue(self, files: ConfigFiles) -> None:
        assert files.issues('{gateway: {auth: {token: "t", password: "p"}}}') == [
            "- gateway.auth.mode: both token and password are configured;"
            " set gateway.auth.mode explicitly"
        ]

    def test_token_and_password_conflict_is_checked_after_env(self, files: ConfigFiles) -> None:
        environ = {"OPENCLAW_GATEWAY_PASSWORD": "p"}
        error = files.error('{gateway: {auth: {token: "t"}}}', environ=environ)
        assert [i.path for i in error.issues] == ["gateway.auth.mode"]

    def test_both_flags_without_a_mode_is_an_issue(self, files: ConfigFiles) -> None:
        error = files.error("{}", token="t", password="p")
        assert [i.path for i in error.issues] == ["gateway.auth.mode"]

    def test_token_and_password_with_a_mode_loads(self, files: ConfigFiles) -> None:
        text = '{gateway: {auth: {mode: "token", token: "t", password: "p"}}}'
        auth = files.load(text).gateway.auth
        assert (auth.mode, auth.secret) == ("token", "t")


class TestBindFlag:
    def test_names_a_bind_mode(self, files: ConfigFiles) -> None:
        gateway = files.load("{}", bind="lan").gateway
        assert (gateway.bind, gateway.host) == ("lan", "0.0.0.0")

    def test_ipv4_address_means_custom(self, files: ConfigFiles) -> None:
        gateway = files.load('{gateway: {customBindHost: "10.0.0.1"}}', bind="10.0.0.2").gateway
        assert (gateway.bind, gateway.host) == ("custom", "10.0.0.2")

    def test_custom_uses_the_file_host(self, files: ConfigFiles) -> None:
        gateway = files.load('{gateway: {customBindHost: "10.0.0.1"}}', bind="custom").gateway
        assert gateway.host == "10.0.0.1"

    def test_anything_else_is_an_issue(self, files: ConfigFiles) -> None:
        assert files.issues("{}", bind="public") == [
            '- --bind: must be one of "loopback", "lan", "custom" or an IPv4 address (got "public")'
        ]


class TestFlagValues:
    """What the command line's parser lets through, the loader takes without a flag's issue:
    a bad value is a usage error (exit 2), never an invalid config (78)."""

    @fuzz(300)
    @given(
        bind=st.one_of(
            st.text(max_size=20),
            st.sampled_from(["loopback", "lan", "custom", "10.0.0.1", " lan", "1.2.3.4.5"]),
        ),
        token=st.text(max_size=20),
    )
    def test_a_flag_the_parser_accepts_is_no_issue_of_the_config(
        self, bind: str, token: str
    ) -> None:
        parser = _parser()
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                args = parser.parse_args(["run", "--bind", bind, "--token", token])
        except SystemExit as exc:
            assert exc.code == 2
            return
        loader = ConfigLoader(
            Overrides(state_dir="/nonexistent/state", bind=args.bind, token=args.token),
            environ={},
        )
        try:
            loader.load()
        except ConfigError as error:
            assert [i for i in error.issues if i.path in ("--bind", "--token")] == []


class TestStartupGuards:
    def test_lan_without_auth_is_refused(self, files: ConfigFiles) -> None:
        error = files.error('{gateway: {bind: "lan", auth: {mode: "none"}}}')
        assert error.render() == (
            f"Invalid config at {files.path}:\n"
            "- gateway.bind: refusing to bind gateway to 0.0.0.0:18789 without auth"
            " (set gateway.auth.token/password,"
            " or set OPENCLAW_GATEWAY_TOKEN/OPENCLAW_GATEWAY_PASSWORD)"
        )

    def test_custom_without_auth_is_refused(self, files: ConfigFiles) -> None:
        text = """{gateway: {bind: "custom", customBindHost: "10.0.0.1", port: 9000,
                             auth: {mode: "none"}}}"""
        (issue,) = files.error(text).issues
        assert issue.message.startswith("refusing to bind gateway to 10.0.0.1:9000 without auth")

    def test_lan_with_a_token_still_to_be_generated_starts(self, files: ConfigFiles) -> None:
        auth = files.load('{gateway: {bind: "lan"}}').gateway.auth
        assert (auth.mode, auth.token) == ("token", None)

    def test_loopback_without_auth_starts(self, files: ConfigFiles) -> None:
        assert files.load('{gateway: {auth: {mode: "none"}}}').gateway.auth.mode == "none"

    def test_custom_without_a_host_is_refused(self, files: ConfigFiles) -> None:
        assert files.issues('{gateway: {bind: "custom"}}') == [
            "- gateway.customBindHost: gateway.bind=custom requires gateway.customBindHost"
        ]

    def test_custom_with_a_host_that_is_not_ipv4_is_refused(self, files: ConfigFiles) -> None:
        assert files.issues('{gateway: {bind: "custom", customBindHost: "example.com"}}') == [
            "- gateway.customBindHost: gateway.bind=custom requires a valid IPv4 customBindHost"
            " (got example.com)"
        ]

    @pytest.mark.parametrize(
        "host", ["https://user:zq-pw@proxy.example", "hooks.slack.com/services/T1/B2/zq"]
    )
    def test_a_custom_host_holding_a_secret_is_not_quoted(
        self, files: ConfigFiles, host: str
    ) -> None:
        text = f'{{gateway: {{bind: "custom", customBindHost: "{host}"}}}}'
        assert files.issues(text) == [
            "- gateway.customBindHost: gateway.bind=custom requires a valid IPv4 customBindHost"
            " (got a value not shown: it may hold a password)"
        ]

    def test_custom_with_an_ipv4_host_starts(self, files: ConfigFiles) -> None:
        gateway = files.load('{gateway: {bind: "custom", customBindHost: "192.168.1.5"}}').gateway
        assert gateway.host == "192.168.1.5"

    def test_a_host_that_is_not_ipv4_is_fine_when_bind_is_not_custom(
        self, files: ConfigFiles
    ) -> None:
        assert files.load('{gateway: {customBindHost: "example.com"}}').gateway.host == "127.0.0.1"

    def test_bind_flag_is_guarded_too(self, files: ConfigFiles) -> None:
        (issue,) = files.error('{gateway: {auth: {mode: "none"}}}', bind="lan").issues
        assert issue.path == "gateway.bind"


class TestReloadModeRestart:
    def test_warns_that_clawgate_never_restarts_itself(self, files: ConfigFiles) -> None:
        config = files.load('{gateway: {reload: {mode: "restart"}}}')
        assert config.warnings == (
            ConfigWarning(
                "gateway.reload.mode", 'clawgate never restarts itself; acts as "hybrid"'
            ),
        )


class TestShortSecretsBeyondLoopback:
    """Any length is accepted (config.md names none, OpenClaw checks none), but a short secret
    on a port others can reach is a warning: the limiter slows one address, not many."""

    def warned(self, config: Config) -> list[tuple[str, str]]:
        return [(w.path, w.message) for w in config.warnings]

    def test_a_short_token_on_a_lan_bind_is_a_warning(self, files: ConfigFiles) -> None:
        config = files.load('{gateway: {bind: "lan", auth: {token: "tok-12345"}}}')
        assert self.warned(config) == [
            (
                "gateway.auth.token",
                "is 9 characters long, on a gateway others can reach (bind lan): a secret of"
                " fewer than 16 characters can be guessed; use a long random one (`clawgate"
                " token` prints one)",
            )
        ]

    def test_from_the_environment_or_a_flag_it_names_them(self, files: ConfigFiles) -> None:
        env = files.load(
            '{gateway: {bind: "lan"}}', environ={"OPENCLAW_GATEWAY_PASSWORD": "hunter2"}
        )
        assert [path for path, _ in self.warned(env)] == ["OPENCLAW_GATEWAY_PASSWORD"]
        assert "is 7 characters long" in self.warned(env)[0][1]
        flag = files.load("{}", bind="lan", token="short")
        assert [path for path, _ in self.warned(flag)] == ["--token"]
        secret_file = files.root / "token.txt"
        secret_file.write_text("short\n")
        read = files.load("{}", bind="lan", token_file=str(secret_file))
        assert [path for path, _ in self.warned(read)] == ["--token-file"]

    def test_a_custom_bind_beyond_loopback_and_a_trusted_proxy_count(
        self, files: ConfigFiles
    ) -> None:
        custom = files.load(
            '{gateway: {bind: "custom", customBindHost: "192.168.1.5", auth: {token: "abc"}}}'
        )
        assert "(bind custom 192.168.1.5)" in self.warned(custom)[0][1]
        proxied = files.load('{gateway: {trustedProxies: ["10.0.0.1"], auth: {token: "abc"}}}')
        assert "(behind a trusted proxy)" in self.warned(proxied)[0][1]

    def test_a_short_hook_token_beyond_loopback_is_one_too(self, files: ConfigFiles) -> None:
        config = files.load(
            '{gateway: {bind: "lan", auth: {token: "a-long-enough-gateway-token"}},'
            ' hooks: {enabled: true, token: "hook-1"}}'
        )
        assert [path for path, _ in self.warned(config)] == ["hooks.token"]

    @pytest.mark.parametrize(
        "text",
        [
            '{gateway: {auth: {token: "abc"}}}',  # loopback: only this host
            '{gateway: {bind: "custom", customBindHost: "127.0.0.2", auth: {token: "abc"}}}',
            '{gateway: {bind: "lan", auth: {token: "0123456789abcdef"}}}',  # 16: enough
            '{gateway: {bind: "lan", auth: {mode: "password", password: "sixteen-chars-pw",'
            ' token: "abc"}}}',  # the token is not used in password mode
            '{gateway: {bind: "lan", auth: {token: "0123456789abcdef"}},'
            ' hooks: {enabled: false, token: "hook-1"}}',  # hooks off: their token is unused
        ],
    )
    def test_no_warning_otherwise(self, files: ConfigFiles, text: str) -> None:
        assert self.warned(files.load(text)) == []


class TestPublicMetricsBeyondLoopback:
    def test_are_a_warning_on_a_gateway_others_can_reach(self, files: ConfigFiles) -> None:
        config = files.load(
            '{gateway: {bind: "lan", auth: {token: "0123456789abcdef"}, metrics: {public: true}}}'
        )
        assert [(w.path, w.message) for w in config.warnings] == [
            (
                "gateway.metrics.public",
                "anyone who can reach the gateway (bind lan) reads /metrics without a token:"
                " its agent and provider ids, request and run counts, memory and CPU",
            )
        ]

    @pytest.mark.parametrize(
        "text",
        [
            "{gateway: {metrics: {public: true}}}",  # loopback: this host's scraper
            '{gateway: {bind: "lan", auth: {token: "0123456789abcdef"},'
            " metrics: {public: true, enabled: false}}}",
        ],
    )
    def test_are_not_otherwise(self, files: ConfigFiles, text: str) -> None:
        assert files.load(text).warnings == ()


class TestExampleFile:
    EXAMPLE = REPO / "conf" / "example.json5"

    def test_loads_without_issues_or_warnings(self, tmp_path: Path) -> None:
        loader = ConfigLoader(
            Overrides(config_path=str(self.EXAMPLE), state_dir=str(tmp_path)), environ={}
        )
        assert loader.load().warnings == ()

    def test_lists_every_key_of_the_effective_config(self, tmp_path: Path) -> None:
        loader = ConfigLoader(
            Overrides(config_path=str(self.EXAMPLE), state_dir=str(tmp_path)), environ={}
        )
        parsed = json5.loads(self.EXAMPLE.read_text())
        assert _key_paths(parsed) == _key_paths(effective_dict(loader.load()))

    def test_shows_the_default_values(self, tmp_path: Path) -> None:
        example = ConfigLoader(
            Overrides(config_path=str(self.EXAMPLE), state_dir=str(tmp_path)), environ={}
        ).load()
        defaults = ConfigLoader(Overrides(state_dir=str(tmp_path)), environ={}).load_text("{}")
        assert example.gateway == defaults.gateway
        assert example.logging == defaults.logging
        assert example.agents.agents[0].models == defaults.agents.agents[0].models
        assert example.agents.maintenance == defaults.agents.maintenance

    def test_the_embedded_default_is_a_valid_file_too(self, tmp_path: Path) -> None:
        loader = ConfigLoader(
            Overrides(config_path=str(REPO / "conf" / "gateway.json5"), state_dir=str(tmp_path)),
            environ={},
        )
        assert loader.load().source.exists is True


def _key_paths(value: object, prefix: str = "") -> set[str]:
    """Dotted key paths, list items as `[]`, for comparing the shape of two configs."""
    paths = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            paths |= {path} | _key_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            paths |= _key_paths(item, f"{prefix}[]")
    return paths
