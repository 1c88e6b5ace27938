"""`config.get` and `config.patch` (ws-protocol.md §8; hot reload: config.md §7)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp
import json5
import json5.lib
import pytest

from gateway.appkeys import STATE
from gateway.statedir import MAX_CONFIG_BYTES
from gateway.ws.handler import WS
from gateway.ws.methods import config as config_methods
from gateway.ws.state import WsSettings
from tests.config.test_configfile import release_fifo_reader
from tests.support.openclaw_secrets import ENVIRON, OPENCLAW_SECRETS, SECRET_MARK, SECRET_NUMBERS
from tests.support.process import GatewayProcess, clean_env
from tests.support.process_client import TOKEN as PROCESS_TOKEN
from tests.support.process_client import connect_ws
from tests.support.ws_client import CONFIG, Gateway, GatewayWs, MakeGateway, connect_params

REDACTED = "__OPENCLAW_REDACTED__"


def file_hash(gateway: Gateway) -> str:
    return hashlib.sha256(gateway.config_path.read_bytes()).hexdigest()


async def patch(ws: GatewayWs, raw: object, base_hash: str | None) -> dict:
    params = {"raw": raw if isinstance(raw, str) else json.dumps(raw)}
    if base_hash is not None:
        params["baseHash"] = base_hash
    return await ws.call("config.patch", params)


class TestConfigGet:
    async def test_shape_with_secrets_redacted(self, ws: GatewayWs, gateway: Gateway) -> None:
        payload = await ws.ok("config.get")
        assert list(payload) == [
            "path",
            "exists",
            "raw",
            "parsed",
            "config",
            "valid",
            "hash",
            "issues",
            "warnings",
        ]
        text = gateway.config_path.read_text()
        assert payload["path"] == str(gateway.config_path) and payload["exists"] is True
        assert payload["raw"] == text.replace('"test-token"', f'"{REDACTED}"')
        assert payload["parsed"]["gateway"]["auth"] == {"mode": "token", "token": REDACTED}
        assert payload["config"]["gateway"]["auth"]["token"] == REDACTED
        assert "test-token" not in json.dumps(payload)
        assert (payload["valid"], payload["issues"], payload["warnings"]) == (True, [], [])
        assert payload["hash"] == file_hash(gateway)

    async def test_without_a_file(self, ws: GatewayWs, gateway: Gateway) -> None:
        gateway.config_path.unlink()
        payload = await ws.ok("config.get")
        assert (payload["exists"], payload["raw"], payload["parsed"], payload["hash"]) == (
            False,
            None,
            None,
            None,
        )

    async def test_an_invalid_file_on_disk_shows_its_issues(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        gateway.config_path.write_text('{ gateway: { bind: "public" } }')
        payload = await ws.ok("config.get")
        assert payload["valid"] is False
        assert payload["issues"] == [
            {
                "path": "gateway.bind",
                "message": 'must be one of "loopback", "lan", "custom" (got "public")',
            }
        ]

    async def test_a_header_written_as_its_name_is_not_shown(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        """A provider header written whole as the name (`"Authorization: Bearer sk-…": "x"`)
        holds the key in the name: neither `raw`, `parsed` nor the issue shows it."""
        text = (
            '{ models: { providers: { p: { baseUrl: "http://h", headers: {'
            ' "Authorization: Bearer sk-f00d": "x", \'x-a sk-beef\': "y", "x-org": "o" } } } } }'
        )
        gateway.config_path.write_text(text)
        payload = await ws.ok("config.get")
        assert "f00d" not in json.dumps(payload) and "beef" not in json.dumps(payload)
        shown = text
        for secret in ("Authorization: Bearer sk-f00d", "x", "x-a sk-beef", "y", "o"):
            shown = shown.replace(f'{secret}"', f'{REDACTED}"').replace(
                f"{secret}'", f"{REDACTED}'"
            )
        assert payload["raw"] == shown
        assert payload["parsed"]["models"]["providers"]["p"]["headers"] == {
            REDACTED: REDACTED,
            f"{REDACTED}2": REDACTED,
            "x-org": REDACTED,
        }
        problem = (
            "its name is not a header name, and is not shown as it may hold a secret (a header"
            ' is written {"Authorization": "Bearer …"}, not as one string)'
        )
        assert payload["issues"] == [
            {"path": "models.providers.p.headers", "message": f"entry {n}: {problem}"}
            for n in (1, 2)
        ]

    async def test_a_file_that_is_not_utf8_shows_its_issue(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        """An edit that saved the file in another encoding: the reload refused it, and
        config.get says why, as it does for any other invalid file."""
        gateway.config_path.write_bytes(b'{ agents: { list: [{ id: "main", name: "caf\xe9" }] } }')
        payload = await ws.ok("config.get")
        assert (payload["exists"], payload["raw"], payload["parsed"]) == (True, None, None)
        assert payload["valid"] is False
        assert payload["issues"] == [{"path": "<file>", "message": "not valid UTF-8 (byte 43)"}]
        assert payload["hash"] == file_hash(gateway)

    async def test_a_file_nested_deeper_than_the_parser_goes_shows_its_issue(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        gateway.config_path.write_text("{ channels: " + "[" * 300 + "]" * 300 + " }")
        payload = await ws.ok("config.get")
        assert (payload["exists"], payload["raw"], payload["parsed"]) == (True, None, None)
        assert payload["valid"] is False
        assert payload["issues"] == [
            {"path": "<file>", "message": "JSON5 syntax error: nested too deeply"}
        ]

    async def test_a_file_that_cannot_be_read_shows_its_issue(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        """A directory where the file was (or a file the gateway may not read)."""
        gateway.config_path.unlink()
        gateway.config_path.mkdir()
        payload = await ws.ok("config.get")
        assert (payload["exists"], payload["raw"], payload["hash"]) == (True, None, None)
        assert payload["valid"] is False
        assert payload["issues"] == [
            {"path": "<file>", "message": "cannot read config file: Is a directory"}
        ]
        frame = await patch(ws, {"logging": {"level": "debug"}}, "0" * 64)
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "invalid config",
            "details": {"issues": payload["issues"]},
        }
        assert gateway.config_path.is_dir()

    async def test_a_fifo_where_the_file_was_shows_its_issue_without_waiting(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        """A read of a FIFO waits for a writer for ever: config.get would never answer, and a
        config.patch would hold the config lock (every later patch and reload) with it."""
        gateway.config_path.unlink()
        os.mkfifo(gateway.config_path)
        try:
            get = await ws.response(await ws.request("config.get"), wait=5)
            patched = await ws.response(
                await ws.request(
                    "config.patch", {"raw": '{"logging": {"level": "debug"}}', "baseHash": "0"}
                ),
                wait=5,
            )
        finally:
            release_fifo_reader(gateway.config_path)
        issues = [{"path": "<file>", "message": "cannot read config file: not a regular file"}]
        assert (get["payload"]["exists"], get["payload"]["raw"]) == (True, None)
        assert (get["payload"]["valid"], get["payload"]["issues"]) == (False, issues)
        assert patched["error"] == {
            "code": "INVALID_REQUEST",
            "message": "invalid config",
            "details": {"issues": issues},
        }

    async def test_a_file_larger_than_a_config_may_be_shows_its_issue(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        gateway.config_path.write_text("{}" + " " * MAX_CONFIG_BYTES)
        payload = await ws.ok("config.get")
        assert (payload["exists"], payload["raw"], payload["parsed"]) == (True, None, None)
        assert payload["valid"] is False
        message = (
            f"cannot read config file: it has {MAX_CONFIG_BYTES + 2} bytes,"
            f" more than the {MAX_CONFIG_BYTES} a config file may hold"
        )
        assert payload["issues"] == [{"path": "<file>", "message": message}]
        assert payload["hash"] is None

    async def test_a_file_with_nan_shows_its_issue_in_json(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        """JSON5's NaN has no JSON spelling: shown in `parsed`, it made the answer no JSON."""
        gateway.config_path.write_text(CONFIG.replace("agents:", "channels: { x: NaN }, agents:"))
        frame_id = await ws.request("config.get")
        text = await ws.ws.receive_str(timeout=5)
        while f'"id":"{frame_id}"' not in text:
            text = await ws.ws.receive_str(timeout=5)
        payload = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text}"))
        assert (payload["payload"]["raw"], payload["payload"]["parsed"]) == (None, None)
        assert payload["payload"]["issues"] == [
            {"path": "channels.x", "message": "must be a finite number (got NaN)"}
        ]


class TestConfigPatch:
    async def test_a_stale_or_missing_base_hash_is_refused(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        before = gateway.config_path.read_bytes()
        stale = await patch(ws, {"logging": {"level": "debug"}}, "0" * 64)
        assert stale["error"] == {
            "code": "INVALID_REQUEST",
            "message": "config changed since last load; re-run config.get and retry",
        }
        missing = await patch(ws, {"logging": {"level": "debug"}}, None)
        assert missing["error"]["message"] == (
            "config base hash required; re-run config.get and retry"
        )
        assert gateway.config_path.read_bytes() == before

    async def test_a_new_token_applies_without_a_restart(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        os.chmod(gateway.config_path, 0o640)
        base = (await ws.ok("config.get"))["hash"]
        frame = await patch(ws, {"gateway": {"auth": {"token": "new-token"}}}, base)
        payload = frame["payload"]
        assert list(payload) == ["ok", "path", "hash", "config", "restart", "warnings"]
        assert payload["ok"] is True and payload["hash"] == file_hash(gateway)
        assert payload["restart"] == {"required": False, "paths": []}
        assert payload["config"]["gateway"]["auth"]["token"] == REDACTED
        assert payload["warnings"] == [
            "config file rewritten as JSON: comments and formatting were not preserved"
        ]
        written = json.loads(gateway.config_path.read_text())
        assert written["gateway"]["auth"] == {"mode": "token", "token": "new-token"}
        assert gateway.config_path.read_text().startswith('{\n  "gateway": {\n')
        assert stat.S_IMODE(gateway.config_path.stat().st_mode) == 0o640
        assert [
            p.name for p in gateway.config_path.parent.iterdir() if p.name.startswith(".")
        ] == []
        # The old token stops working for new connects; this connection stays.
        old = await gateway.raw()
        await old.recv()
        refused = await old.call("connect", connect_params(auth={"token": "test-token"}))
        assert refused["error"]["details"]["code"] == "AUTH_TOKEN_MISMATCH"
        fresh = await gateway.connected(auth={"token": "new-token"})
        assert (await ws.ok("health"))["ok"] is True
        await ws.event("health")  # the reload announced itself
        await fresh.ws.close()

    async def test_the_files_owner_and_group_are_kept(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        """The new file is the gateway's own until it takes the old one's owner: a config
        owned by the administrator (the gateway running as root) would become root's, which
        the administrator could no longer edit."""
        if os.geteuid() != 0:
            pytest.skip("a file owned by another user needs root to set up")
        os.chown(gateway.config_path, 65534, 65534)
        frame = await patch(ws, {"logging": {"level": "debug"}}, file_hash(gateway))
        assert frame["ok"] is True, frame
        written = gateway.config_path.stat()
        assert (written.st_uid, written.st_gid) == (65534, 65534)

    async def test_an_invalid_result_leaves_the_file_alone(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        before = gateway.config_path.read_bytes()
        frame = await patch(ws, {"gateway": {"bind": "public", "prot": 1}}, file_hash(gateway))
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "invalid config",
            "details": {
                "issues": [
                    {
                        "path": "gateway.bind",
                        "message": 'must be one of "loopback", "lan", "custom" (got "public")',
                    },
                    {"path": "gateway.prot", "message": 'unknown key (did you mean "port"?)'},
                ]
            },
        }
        assert gateway.config_path.read_bytes() == before

    async def test_a_token_no_client_can_send_is_refused_without_showing_it(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        before = gateway.config_path.read_bytes()
        patched = {"gateway": {"auth": {"token": "new\r\ntoken-4f2"}}}
        frame = await patch(ws, patched, file_hash(gateway))
        message = (
            "has a control character (such as a line break or a NUL), which no client can"
            " send in a header; the value is not shown"
        )
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "invalid config",
            "details": {"issues": [{"path": "gateway.auth.token", "message": message}]},
        }
        assert gateway.config_path.read_bytes() == before
        assert (await gateway.connected(auth={"token": "test-token"})).ws is not None

    async def test_a_token_the_state_dir_cannot_give_leaves_the_file_alone(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        """Without `token` the gateway runs with the state dir's `gateway.token`; one that
        `run` would refuse (empty) makes the patch invalid, rather than a file written that
        the running gateway never applied."""
        token_file = gateway.state_dir / "gateway.token"
        token_file.write_text("")
        before = gateway.config_path.read_bytes()
        frame = await patch(ws, {"gateway": {"auth": {"token": None}}}, file_hash(gateway))
        fix = (
            f"remove it (`rm {token_file}`) and a new token is generated, or write the token in it."
        )
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "invalid config",
            "details": {
                "issues": [
                    {
                        "path": "gateway.auth.token",
                        "message": f"the token file {token_file} is empty. Fix: {fix}",
                    }
                ]
            },
        }
        assert gateway.config_path.read_bytes() == before
        assert (await gateway.connected(auth={"token": "test-token"})).ws is not None

    @pytest.mark.parametrize("raw", ["[1, 2]", '"text"', "3"])
    async def test_raw_must_be_an_object(self, ws: GatewayWs, gateway: Gateway, raw: str) -> None:
        frame = await patch(ws, raw, file_hash(gateway))
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "config.patch raw must be an object",
        }

    async def test_a_file_gone_since_it_was_loaded_is_patched_as_it_runs(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        """Deleted or moved aside while running: the patch goes on the config in force, not
        on the embedded default, whose generated token would have locked every client out."""
        gateway.config_path.unlink()
        frame = await patch(ws, {"logging": {"level": "debug"}}, None)
        assert frame["ok"] is True, frame
        written = json.loads(gateway.config_path.read_text())
        assert written["gateway"]["auth"] == {"mode": "token", "token": "test-token"}
        assert written["agents"] == {"list": [{"id": "main", "default": True}]}
        assert written["logging"] == {"level": "debug"}
        again = await gateway.connected()  # the token every client holds still works
        await again.ws.close()

    async def test_a_file_that_is_not_utf8_is_left_alone(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        """Its bytes are no config to merge into; the patch must not replace them with the
        embedded default's."""
        before = b'{ agents: { list: [{ id: "main", name: "caf\xe9" }] } }'
        gateway.config_path.write_bytes(before)
        frame = await patch(ws, {"logging": {"level": "debug"}}, file_hash(gateway))
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "invalid config",
            "details": {"issues": [{"path": "<file>", "message": "not valid UTF-8 (byte 43)"}]},
        }
        assert gateway.config_path.read_bytes() == before

    async def test_a_lone_surrogate_escape_is_written_as_its_escape(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        """JSON5 can spell a lone surrogate (a JavaScript client that cut a string inside an
        emoji); UTF-8 cannot, so the file keeps it as the escape it came as."""
        raw = '{"agents": {"list": [{"id": "main", "default": true, "name": "cut \\ud83d"}]}}'
        frame = await patch(ws, raw, file_hash(gateway))
        assert frame["ok"] is True, frame
        assert frame["payload"]["hash"] == file_hash(gateway)
        assert '"name": "cut \\ud83d"' in gateway.config_path.read_text()
        agents = await ws.ok("agents.list")
        assert agents["agents"][0]["name"] == "cut \ud83d"

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            ('{"channels": {"x": NaN}}', "channels.x: must be a finite number (got NaN)"),
            (
                '{"agents": {"defaults": {"historyLimit": 0x' + "F" * 5000 + "}}}",
                "agents.defaults.historyLimit: must be a finite number (got an integer of more"
                " than 308 digits)",
            ),
        ],
    )
    async def test_a_number_json_cannot_carry_is_refused(
        self, ws: GatewayWs, gateway: Gateway, raw: str, message: str
    ) -> None:
        before = gateway.config_path.read_bytes()
        frame = await patch(ws, raw, file_hash(gateway))
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": f"invalid config.patch params: at /raw: {message}",
        }
        assert gateway.config_path.read_bytes() == before

    async def test_raw_must_be_json5(self, ws: GatewayWs, gateway: Gateway) -> None:
        frame = await patch(ws, "{nope", file_hash(gateway))
        assert frame["error"]["message"].startswith("invalid config.patch params: at /raw: ")

    async def test_raw_larger_than_a_config_file_may_be_is_refused_unparsed(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        before = gateway.config_path.read_bytes()
        frame = await patch(ws, "{" + " " * MAX_CONFIG_BYTES, file_hash(gateway))
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": (
                f"invalid config.patch params: at /raw: must be at most {MAX_CONFIG_BYTES}"
                " bytes (UTF-8), the most a config file may hold"
            ),
        }
        assert gateway.config_path.read_bytes() == before

    async def test_raw_of_the_largest_size_is_parsed(self, ws: GatewayWs, gateway: Gateway) -> None:
        raw = "{" + " " * (MAX_CONFIG_BYTES - 4) + "é}"  # é: two bytes in UTF-8
        assert len(raw.encode()) == MAX_CONFIG_BYTES
        # json5 reads a mebibyte of it in some 1.5 s of CPU here, several times that on a
        # host whose cores other processes keep busy.
        params = {"raw": raw, "baseHash": file_hash(gateway)}
        frame = await ws.response(await ws.request("config.patch", params), wait=30)
        assert frame["error"]["message"].startswith(
            "invalid config.patch params: at /raw: not valid JSON5"
        )

    async def test_a_result_larger_than_a_config_may_be_leaves_the_file_alone(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        """Written with indentation, a patch within the limit can give a file beyond it."""
        before = gateway.config_path.read_bytes()
        nested: object = []
        for _ in range(20):
            nested = [nested]
        raw = json.dumps({"channels": {"x": [nested] * 1500}}, separators=(",", ":"))
        assert len(raw) < MAX_CONFIG_BYTES // 10
        # json5 reads nested arrays at some 20 KB a second: seconds here, more on a busy host.
        params = {"raw": raw, "baseHash": file_hash(gateway)}
        frame = await ws.response(await ws.request("config.patch", params), wait=30)
        assert frame["error"]["message"] == "invalid config"
        (issue,) = frame["error"]["details"]["issues"]
        assert issue["path"] == "<file>"
        assert issue["message"].endswith(f"more than the {MAX_CONFIG_BYTES} a config file may hold")
        assert gateway.config_path.read_bytes() == before

    async def test_merge_patch_semantics_and_redacted_values(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        frame = await patch(
            ws,
            {
                "gateway": {"auth": {"token": REDACTED}, "http": None},
                "session": {"mainKey": "home"},
            },
            file_hash(gateway),
        )
        assert frame["ok"] is True, frame
        written = json.loads(gateway.config_path.read_text())
        assert written["gateway"] == {"auth": {"mode": "token", "token": "test-token"}}
        assert written["session"] == {"mainKey": "home"}
        assert written["agents"] == {"list": [{"id": "main", "default": True}]}
        agents = await ws.ok("agents.list")
        assert agents["mainKey"] == "home"

    async def test_a_redacted_value_inside_an_array_keeps_the_file_s_value(
        self, make_gateway: MakeGateway
    ) -> None:
        """The agent list sent back as config.get shows it: the marker inside it keeps what
        the file has at that place, as an object's member does."""
        gateway = await make_gateway(
            CONFIG.replace("default: true }", 'default: true, params: { api_key: "sk-agent" } }')
        )
        ws = await gateway.connected()
        shown = (await ws.ok("config.get"))["parsed"]["agents"]["list"]
        assert shown == [{"id": "main", "default": True, "params": {"api_key": REDACTED}}]
        shown[0]["name"] = "Main"
        frame = await patch(ws, {"agents": {"list": shown}}, file_hash(gateway))
        assert frame["ok"] is True, frame
        written = json.loads(gateway.config_path.read_text())["agents"]["list"]
        assert written == [
            {"id": "main", "default": True, "params": {"api_key": "sk-agent"}, "name": "Main"}
        ]
        await ws.ws.close()

    async def test_a_list_of_urls_with_passwords_round_trips(
        self, make_gateway: MakeGateway
    ) -> None:
        urls = '["https://bot:pw-1@relay.example/a", "https://relay.example/b"]'
        gateway = await make_gateway(
            CONFIG.replace("\n}", f"\n  channels: {{ relay: {{ urls: {urls} }} }},\n}}")
        )
        ws = await gateway.connected()
        shown = (await ws.ok("config.get"))["parsed"]["channels"]
        assert shown == {"relay": {"urls": [REDACTED, "https://relay.example/b"]}}
        shown["relay"]["urls"].append("https://relay.example/c")
        frame = await patch(ws, {"channels": shown}, file_hash(gateway))
        assert frame["ok"] is True, frame
        written = json.loads(gateway.config_path.read_text())["channels"]
        assert written == {
            "relay": {
                "urls": [
                    "https://bot:pw-1@relay.example/a",
                    "https://relay.example/b",
                    "https://relay.example/c",
                ]
            }
        }
        await ws.ws.close()

    async def test_a_redacted_array_member_the_file_has_no_value_for_is_refused(
        self, make_gateway: MakeGateway
    ) -> None:
        urls = '["https://bot:pw-1@relay.example/a"]'
        gateway = await make_gateway(
            CONFIG.replace("\n}", f"\n  channels: {{ relay: {{ urls: {urls} }} }},\n}}")
        )
        ws = await gateway.connected()
        before = gateway.config_path.read_bytes()
        raw = {"channels": {"relay": {"urls": [REDACTED, REDACTED]}}}
        frame = await patch(ws, raw, file_hash(gateway))
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "invalid config.patch params: at /raw: channels.relay.urls[1]:"
            f" {REDACTED} keeps a secret only where the file has one; send the value itself",
        }
        assert gateway.config_path.read_bytes() == before
        await ws.ws.close()

    async def test_a_redacted_secret_in_an_array_does_not_follow_a_changed_address(
        self, make_gateway: MakeGateway
    ) -> None:
        servers = '[{ url: "https://relay.example", token: "relay-secret" }]'
        gateway = await make_gateway(
            CONFIG.replace("\n}", f"\n  channels: {{ relay: {{ servers: {servers} }} }},\n}}")
        )
        ws = await gateway.connected()
        before = gateway.config_path.read_bytes()
        moved = [{"url": "https://attacker.example", "token": REDACTED}]
        frame = await patch(ws, {"channels": {"relay": {"servers": moved}}}, file_hash(gateway))
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "invalid config.patch params: at /raw: channels.relay.servers[0].token"
            f" must be sent again when channels.relay.servers[0].url changes {NOT_SENT}",
        }
        assert gateway.config_path.read_bytes() == before
        await ws.ws.close()

    async def test_listener_paths_need_a_restart(self, ws: GatewayWs, gateway: Gateway) -> None:
        frame = await patch(ws, {"gateway": {"port": 18800}}, file_hash(gateway))
        assert frame["payload"]["restart"] == {"required": True, "paths": ["gateway.port"]}

    async def test_a_store_change_needs_a_restart_and_the_running_store_stays(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        """Like the listener's paths: until a restart the sessions stay where they are, and
        the answers that name their place say so."""
        sqlite = str(gateway.state_dir / "sessions.sqlite3")
        store = {"backend": "postgres", "url": "postgresql://clawgate@db.example:5432/clawgate"}
        frame = await patch(ws, {"store": store}, file_hash(gateway))
        assert frame["payload"]["restart"] == {
            "required": True,
            "paths": ["store.backend", "store.url"],
        }
        assert (await ws.ok("sessions.list"))["path"] == sqlite
        assert (await ws.ok("health", {"probe": True}))["sessions"]["path"] == sqlite
        # Still pending: the next patch says so again.
        again = await patch(ws, {"logging": {"level": "debug"}}, file_hash(gateway))
        assert again["payload"]["restart"] == {
            "required": True,
            "paths": ["store.backend", "store.url"],
        }

    async def test_a_patch_waits_for_another_process_writing_the_file(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        """Under `--workers` each process answers config.patch: they take turns through a
        lock on the state dir, so that a patch checks its hash against what another process
        wrote meanwhile, not against the file it read before (a lost update)."""
        base_hash = file_hash(gateway)
        other = os.open(gateway.state_dir, os.O_RDONLY)
        try:
            fcntl.flock(other, fcntl.LOCK_EX)  # another worker is patching
            frame_id = await ws.request(
                "config.patch",
                {"raw": json.dumps({"logging": {"level": "debug"}}), "baseHash": base_hash},
            )
            with pytest.raises(TimeoutError):
                await ws.response(frame_id, wait=0.5)
            gateway.config_path.write_text(CONFIG.replace("test-token", "other-token"))
        finally:
            os.close(other)
        refused = await ws.response(frame_id)
        assert refused["error"]["message"] == (
            "config changed since last load; re-run config.get and retry"
        )
        assert "other-token" in gateway.config_path.read_text()

    async def test_a_hand_edit_saved_while_the_patch_is_checked_is_not_overwritten(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        """The base hash matched when the patch began; checking a large file takes seconds,
        and an edit saved meanwhile would have been replaced without a word."""
        prompt = "x" * SLOW_TO_PARSE  # a second or more for each parse of the file
        gateway.config_path.write_text(
            CONFIG.replace("default: true }", f'default: true, systemPrompt: "{prompt}" }}')
        )
        frame_id = await ws.request(
            "config.patch",
            {"raw": json.dumps({"logging": {"level": "debug"}}), "baseHash": file_hash(gateway)},
        )
        await asyncio.sleep(0.3)
        edited = CONFIG.replace("test-token", "hand-token")
        gateway.config_path.write_text(edited)
        refused = await ws.response(frame_id, wait=60)
        assert refused["error"] == {
            "code": "INVALID_REQUEST",
            "message": "config changed since last load; re-run config.get and retry",
        }
        assert gateway.config_path.read_text() == edited

    async def test_patches_are_rate_limited_per_connection(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        for _ in range(30):
            assert (await patch(ws, "[]", None))["error"]["code"] == "INVALID_REQUEST"
        error = (await patch(ws, "[]", None))["error"]
        assert error["code"] == "UNAVAILABLE"
        assert error["message"].startswith("rate limit exceeded for config.patch; retry after ")
        assert error["details"] == {"method": "config.patch", "limit": "30 per 60s"}
        assert error["retryable"] is True and 0 < error["retryAfterMs"] <= 60_000

    async def test_a_patch_whose_client_leaves_while_the_file_is_written_is_applied(
        self, make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Closing the socket cancels its calls, but the file is written in a thread that goes
        # on: unapplied, the gateway would run the old config, with reload "off" until a
        # restart, while config.get shows the new file.
        gateway = await make_gateway(
            CONFIG.replace(
                'auth: { mode: "token"', 'reload: { mode: "off" }, auth: { mode: "token"'
            )
        )
        writing, written = threading.Event(), threading.Event()
        write = config_methods.write_atomic

        def held(path: Path, text: str) -> None:
            writing.set()
            written.wait(5)
            write(path, text)

        monkeypatch.setattr(config_methods, "write_atomic", held)
        ws = await gateway.connected()
        base_hash = file_hash(gateway)
        await ws.request(
            "config.patch",
            {
                "raw": json.dumps({"gateway": {"auth": {"token": "new-token"}}}),
                "baseHash": base_hash,
            },
        )
        assert await asyncio.to_thread(writing.wait, 5)
        await ws.ws.close()
        written.set()
        state = gateway.app[STATE]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                while state.config.gateway.auth.token != "new-token":
                    await asyncio.sleep(0.01)
        assert state.config.gateway.auth.token == "new-token"
        assert (
            json.loads(gateway.config_path.read_text())["gateway"]["auth"]["token"] == "new-token"
        )
        fresh = await gateway.connected(auth={"token": "new-token"})
        await fresh.ws.close()

    async def test_without_a_loader(self, make_gateway) -> None:  # type: ignore[no-untyped-def]
        gateway = await make_gateway(with_loader=False)
        ws = await gateway.connected()
        frame = await patch(ws, {}, file_hash(gateway))
        assert frame["error"]["code"] == "UNAVAILABLE"
        await ws.ws.close()


class TestConfigGetHidesEverySecret:
    async def test_a_read_only_client_sees_no_secret_anywhere(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(OPENCLAW_SECRETS, environ=ENVIRON)
        ws = await gateway.connected(
            auth={"token": "zq-secret-gateway-token"}, scopes=["operator.read"]
        )
        frame = await ws.call("config.get")
        assert frame["ok"] is True, frame
        text = json.dumps(frame)
        assert [s for s in (SECRET_MARK, *SECRET_NUMBERS) if s in text] == []
        payload = frame["payload"]
        assert payload["raw"].startswith("// every kind of secret OpenClaw keeps in its config\n")
        assert payload["parsed"]["channels"]["telegram"] == {
            "botToken": REDACTED,
            "webhookSecret": REDACTED,
            "webhookUrl": "https://shown-hooks.example/telegram",
            "keyPrefix": "shown-key-prefix",
        }
        assert payload["config"]["agents"]["list"][0]["params"]["api_key"] == REDACTED
        assert payload["valid"] is True
        await ws.ws.close()

    async def test_nor_a_secret_in_a_urls_query(self, make_gateway: MakeGateway) -> None:
        # Providers and webhooks take keys as query parameters too (`?key=`, `?token=`).
        config = """{
  gateway: { auth: { mode: "token", token: "test-token" } },
  models: { providers: { gen: { api: "openai-completions",
    baseUrl: "https://gen.example/v1?api-version=1&key=zq-query-key" } } },
  channels: { hook: { url: 'https://hooks.example/x?a=1&access_token=zq-query-token' } },
  agents: { list: [{ id: "main", default: true }] },
}
"""
        gateway = await make_gateway(config)
        ws = await gateway.connected(scopes=["operator.read"])
        frame = await ws.call("config.get")
        assert frame["ok"] is True, frame
        assert "zq-query" not in json.dumps(frame)
        payload = frame["payload"]
        assert payload["parsed"]["models"]["providers"]["gen"]["baseUrl"] == REDACTED
        assert payload["config"]["models"]["providers"]["gen"]["baseUrl"] == REDACTED
        assert payload["parsed"]["channels"]["hook"]["url"] == REDACTED
        await ws.ws.close()

    async def test_nor_a_secret_in_an_invalid_urls_issue(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        # The issue lines of an invalid file are shown to read-only clients (and logged).
        gateway.config_path.write_text(
            """{
  gateway: { auth: { mode: "token", token: "test-token" },
    controlUi: { allowedOrigins: ["https://ui:zq-origin-pw@ui.example/"] } },
  models: { providers: { gen: { api: "openai-completions",
    baseUrl: "ftp://gen.example/v1?key=zq-query-key" } } },
}
"""
        )
        reader = await gateway.connected(scopes=["operator.read"])
        frame = await reader.call("config.get")
        assert frame["ok"] is True, frame
        assert frame["payload"]["valid"] is False
        assert frame["payload"]["issues"] == [
            {
                "path": "gateway.controlUi.allowedOrigins[0]",
                "message": "must be an origin like https://host[:port] (not shown: it may hold"
                " a password)",
            },
            {
                "path": "models.providers.gen.baseUrl",
                "message": "must be an http(s) URL (not shown: it may hold a password)",
            },
        ]
        assert "zq-" not in json.dumps(frame)
        await reader.ws.close()

    @pytest.mark.parametrize(
        "url",
        [
            "clawgate:zq-store-pw@db.internal:5432/clawgate",  # no scheme
            "postgresql//clawgate:zq-store-pw@db.internal/clawgate",  # no colon
            "postgres:/clawgate:zq-store-pw@db.internal",  # one slash
            "host=db.internal user=clawgate pw:zq-store-pw",  # no URL at all
        ],
    )
    async def test_nor_a_store_url_that_is_no_url(
        self, ws: GatewayWs, gateway: Gateway, url: str
    ) -> None:
        # The file is invalid until it is fixed; meanwhile config.get shows it.
        gateway.config_path.write_text(
            CONFIG.replace(
                "\n}", f"\n  store: {{ backend: 'postgres', url: {json.dumps(url)} }},\n}}"
            )
        )
        reader = await gateway.connected(scopes=["operator.read"])
        frame = await reader.call("config.get")
        assert frame["ok"] is True, frame
        payload = frame["payload"]
        assert payload["valid"] is False
        assert [issue["path"] for issue in payload["issues"]] == ["store.url"]
        assert payload["parsed"]["store"] == {"backend": "postgres", "url": REDACTED}
        assert f'url: "{REDACTED}"' in payload["raw"]
        assert "zq-" not in json.dumps(frame)
        await reader.ws.close()

    async def test_nor_a_secret_written_as_a_key(self, make_gateway: MakeGateway) -> None:
        """A key holding a secret (a pair written whole as the name, a URL with credentials),
        anywhere in the tree: as a header's name is, the key is redacted."""
        params = (
            '{ temperature: 0.5, extra_body: { "api_key=zq-param-key": true,'
            ' "token: zq-param-token": 1, "https://u:zq-pw@proxy.example": { on: true } } }'
        )
        gateway = await make_gateway(
            CONFIG.replace("default: true }", f"default: true, params: {params} }}")
        )
        ws = await gateway.connected(scopes=["operator.read"])
        frame = await ws.call("config.get")
        assert frame["ok"] is True, frame
        payload = frame["payload"]
        assert payload["valid"] is True, payload["issues"]
        assert "zq-" not in json.dumps(frame)
        shown = {
            "temperature": 0.5,
            # Named like secrets, their values are redacted too.
            "extra_body": {
                REDACTED: REDACTED,
                f"{REDACTED}2": REDACTED,
                f"{REDACTED}3": {"on": True},
            },
        }
        assert payload["parsed"]["agents"]["list"][0]["params"] == shown
        assert payload["config"]["agents"]["list"][0]["params"] == shown
        await ws.ws.close()

    async def test_a_secret_written_as_a_key_survives_the_round_trip(
        self, make_gateway: MakeGateway
    ) -> None:
        params = '{ extra_body: { "api_key=zq-param-key": true, "https://u:zq-pw@p.example": 1 } }'
        config = CONFIG.replace("default: true }", f"default: true, params: {params} }}")
        gateway = await make_gateway(config)
        ws = await gateway.connected()
        got = await ws.ok("config.get")
        shown = got["parsed"]
        shown["agents"]["list"][0]["name"] = "Main"
        shown["agents"]["list"][0]["params"]["extra_body"][f"{REDACTED}2"] = 2
        frame = await patch(ws, {"agents": shown["agents"]}, file_hash(gateway))
        assert frame["ok"] is True, frame
        written = json.loads(gateway.config_path.read_text())["agents"]["list"][0]
        assert written["name"] == "Main"
        assert written["params"] == {
            "extra_body": {"api_key=zq-param-key": True, "https://u:zq-pw@p.example": 2}
        }
        await ws.ws.close()

    async def test_a_key_of_the_file_named_like_a_marker_is_kept_and_edited(
        self, make_gateway: MakeGateway
    ) -> None:
        """config.get shows a hand-written `__OPENCLAW_REDACTED__2` (no secret's name) as it
        is; sent back by that name it was dropped as a marker: config.get's list sent back
        with one name changed lost the key, and a new value for it was never written."""
        params = f'{{ extra_body: {{ "{REDACTED}2": 1, "{REDACTED}": 5, keep: 2 }} }}'
        config = CONFIG.replace("default: true }", f"default: true, params: {params} }}")
        gateway = await make_gateway(config)
        ws = await gateway.connected()
        got = await ws.ok("config.get")
        agents = got["parsed"]["agents"]
        extra = agents["list"][0]["params"]["extra_body"]
        assert extra == {f"{REDACTED}2": 1, REDACTED: 5, "keep": 2}
        agents["list"][0]["name"] = "Main"
        frame = await patch(ws, {"agents": agents}, file_hash(gateway))
        assert frame["ok"] is True, frame
        written = json.loads(gateway.config_path.read_text())["agents"]["list"][0]
        assert (written["name"], written["params"]["extra_body"]) == ("Main", extra)
        extra[f"{REDACTED}2"] = 3
        frame = await patch(ws, {"agents": agents}, file_hash(gateway))
        assert frame["ok"] is True, frame
        written = json.loads(gateway.config_path.read_text())["agents"]["list"][0]
        assert written["params"]["extra_body"] == {f"{REDACTED}2": 3, REDACTED: 5, "keep": 2}
        await ws.ws.close()

    async def test_nor_a_secret_under_another_name_it_goes_by(
        self, make_gateway: MakeGateway
    ) -> None:
        params = '{ bearer: "zq-1", db_pwd: "zq-2", passcode: "zq-3", authJwt: "zq-4", top_p: 1 }'
        gateway = await make_gateway(
            CONFIG.replace("default: true }", f"default: true, params: {params} }}")
        )
        ws = await gateway.connected(scopes=["operator.read"])
        frame = await ws.call("config.get")
        assert frame["ok"] is True, frame
        assert "zq-" not in json.dumps(frame)
        shown = {"bearer": REDACTED, "db_pwd": REDACTED, "passcode": REDACTED}
        shown |= {"authJwt": REDACTED, "top_p": 1}
        assert frame["payload"]["parsed"]["agents"]["list"][0]["params"] == shown
        await ws.ws.close()

    async def test_nor_a_secret_commented_out(self, make_gateway: MakeGateway) -> None:
        config = """{
  gateway: { auth: { mode: "token", token: "test-token" } },
  // before the rotation: token: "old-gateway-token"
  agents: { list: [{ id: "main", default: true }] },
}"""
        gateway = await make_gateway(config)
        ws = await gateway.connected(scopes=["operator.read"])
        raw = (await ws.ok("config.get"))["raw"]
        assert raw == config.replace('"test-token"', f'"{REDACTED}"').replace(
            '"old-gateway-token"', f'"{REDACTED}"'
        )
        await ws.ws.close()

    async def test_nor_a_secret_in_a_webhook_urls_path(self, make_gateway: MakeGateway) -> None:
        # Slack, Discord and Telegram put the credential in the URL's path, Azure's SAS in a
        # `sig` parameter: the whole URL is a secret, whatever the key holding it is called.
        config = """{
  gateway: { auth: { mode: "token", token: "test-token" } },
  channels: {
    slack: { url: "https://hooks.slack.com/services/T0001/B0002/zqSlackWebhookPath" },
    discord: { url: 'https://discord.com/api/webhooks/123456789/zq-discord-webhook-path' },
    telegram: { apiRoot: "https://api.telegram.org/bot123456:zq-telegram-bot-path/" },
    azure: { blob: "https://acct.blob.core.windows.net/c?sv=2024-01-01&sp=r&sig=zq%2Bsas" },
    // old: https://discordapp.com/api/v10/webhooks/987654/zq-discord-comment
    plain: { url: "https://hooks.example/services/shown-path" },
  },
  agents: { list: [{ id: "main", default: true }] },
}
"""
        gateway = await make_gateway(config)
        ws = await gateway.connected()
        payload = await ws.ok("config.get")
        assert "zq" not in json.dumps(payload)
        channels = payload["parsed"]["channels"]
        assert channels == {
            "slack": {"url": REDACTED},
            "discord": {"url": REDACTED},
            "telegram": {"apiRoot": REDACTED},
            "azure": {"blob": REDACTED},
            "plain": {"url": "https://hooks.example/services/shown-path"},
        }
        assert f'slack: {{ url: "{REDACTED}" }}' in payload["raw"]
        # Sent back as config.get shows them, the redacted URLs keep what the file has.
        shown = {
            **payload["parsed"],
            "channels": {**channels, "plain": {"url": "https://n.example"}},
        }
        frame = await patch(ws, shown, file_hash(gateway))
        assert frame["ok"] is True, frame
        written = json5.loads(gateway.config_path.read_text())["channels"]
        assert written["slack"]["url"].endswith("/zqSlackWebhookPath")
        assert written["discord"]["url"].endswith("/zq-discord-webhook-path")
        assert (
            written["telegram"]["apiRoot"]
            == "https://api.telegram.org/bot123456:zq-telegram-bot-path/"
        )
        assert written["azure"]["blob"].endswith("&sig=zq%2Bsas")
        assert written["plain"]["url"] == "https://n.example"
        await ws.ws.close()

    async def test_nor_a_url_with_a_secret_in_another_fields_issue(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        # A proxy's URL pasted where a host, a network or a mode belongs.
        gateway.config_path.write_text(
            """{
  gateway: { auth: { mode: "token", token: "test-token" },
    http: { allowedHosts: ["https://user:zq-host-pw@proxy.example"] },
    trustedProxies: ["http://proxy.example/?token=zq-proxy-token"],
    reload: { mode: "https://hooks.slack.com/services/T1/B2/zq-slack" } },
}
"""
        )
        reader = await gateway.connected(scopes=["operator.read"])
        frame = await reader.call("config.get")
        assert frame["ok"] is True, frame
        issues = {issue["path"]: issue["message"] for issue in frame["payload"]["issues"]}
        assert issues == {
            "gateway.http.allowedHosts[0]": "must be a host name or address without port"
            " (got a value not shown: it may hold a password)",
            "gateway.trustedProxies[0]": "must be an IP address or CIDR"
            " (got a value not shown: it may hold a password)",
            "gateway.reload.mode": 'must be one of "off", "hot", "hybrid", "restart"'
            " (got a value not shown: it may hold a password)",
        }
        assert "zq-" not in json.dumps(frame)
        await reader.ws.close()

    async def test_nor_a_password_in_a_libpq_connection_string(
        self, make_gateway: MakeGateway
    ) -> None:
        # libpq's keyword/value form, in an OpenClaw section clawgate carries.
        config = """{
  gateway: { auth: { mode: "token", token: "test-token" } },
  plugins: { db: { dsn: "host=db.example dbname=app user=app password=zq-libpq-pw" },
    other: { dsn: "host=db.example dbname=app" } },
  agents: { list: [{ id: "main", default: true }] },
}
"""
        gateway = await make_gateway(config)
        ws = await gateway.connected(scopes=["operator.read"])
        payload = await ws.ok("config.get")
        assert "zq-" not in json.dumps(payload)
        assert payload["parsed"]["plugins"] == {
            "db": {"dsn": REDACTED},
            "other": {"dsn": "host=db.example dbname=app"},
        }
        await ws.ws.close()

    async def test_nor_a_webhook_url_in_an_issue(self, ws: GatewayWs, gateway: Gateway) -> None:
        gateway.config_path.write_text(
            """{
  gateway: { auth: { mode: "token", token: "test-token" } },
  models: { providers: {
    a: { api: "openai-completions", baseUrl: "hooks.slack.com/services/T1/B2/zq-slack" },
    b: { api: "openai-completions", baseUrl: "ftp://x.example/api/webhooks/1/zq-discord" },
    c: { api: "openai-completions", baseUrl: "ftp://x.example/bot1:zq-telegram/" },
  } },
}
"""
        )
        reader = await gateway.connected(scopes=["operator.read"])
        frame = await reader.call("config.get")
        assert frame["ok"] is True, frame
        assert [issue["message"] for issue in frame["payload"]["issues"]] == [
            "must be an http(s) URL (not shown: it may hold a password)"
        ] * 3
        assert "zq-" not in json.dumps(frame)
        await reader.ws.close()


PROVIDERS = """{
  gateway: { auth: { mode: "token", token: "test-token" } },
  models: {
    providers: {
      openai: { baseUrl: "https://api.openai.example/v1", apiKey: "sk-kept-secret" },
      corp: {
        baseUrl: "https://llm.corp.example/v1",
        headers: { "x-api-token": "corp-kept-secret", "x-team": "blue" },
      },
    },
  },
  agents: { list: [{ id: "main", default: true }] },
}
"""
NOT_SENT = "(a redacted, omitted, ${VAR} or file-read secret is not sent to a new address)"


class TestConfigPatchKeepsSecretsWhereTheyWent:
    """A redacted secret sent back, or left out, is the file's: it may not follow a new URL."""

    @pytest.fixture
    async def providers(self, make_gateway: MakeGateway) -> Gateway:
        return await make_gateway(PROVIDERS, environ={"OPENAI_API_KEY": "sk-from-env"})

    async def refused(self, gateway: Gateway, raw: object) -> str:
        ws = await gateway.connected()
        before = gateway.config_path.read_bytes()
        frame = await patch(ws, raw, file_hash(gateway))
        await ws.ws.close()
        assert gateway.config_path.read_bytes() == before
        assert frame["error"]["code"] == "INVALID_REQUEST", frame
        message: str = frame["error"]["message"]
        return message

    async def test_a_redacted_api_key_does_not_follow_a_new_base_url(
        self, providers: Gateway
    ) -> None:
        new = {"baseUrl": "https://attacker.example/v1", "apiKey": REDACTED}
        message = await self.refused(providers, {"models": {"providers": {"openai": new}}})
        assert message == (
            "invalid config.patch params: at /raw: models.providers.openai.apiKey must be sent"
            f" again when models.providers.openai.baseUrl changes {NOT_SENT}"
        )

    async def test_an_omitted_api_key_does_not_follow_a_new_base_url(
        self, providers: Gateway
    ) -> None:
        new = {"baseUrl": "https://attacker.example/v1"}
        message = await self.refused(providers, {"models": {"providers": {"openai": new}}})
        assert "models.providers.openai.apiKey must be sent again" in message

    async def test_an_env_reference_does_not_follow_a_new_base_url(
        self, providers: Gateway
    ) -> None:
        new = {"baseUrl": "https://attacker.example/v1", "apiKey": "${OPENAI_API_KEY}"}
        message = await self.refused(providers, {"models": {"providers": {"openai": new}}})
        assert "models.providers.openai.apiKey must be sent again" in message

    async def test_a_new_provider_may_not_name_an_env_secret(self, providers: Gateway) -> None:
        new = {"baseUrl": "https://attacker.example/v1", "apiKey": "${OPENAI_API_KEY}"}
        message = await self.refused(providers, {"models": {"providers": {"evil": new}}})
        assert message.startswith(
            "invalid config.patch params: at /raw: models.providers.evil.apiKey must be sent"
            " again when models.providers.evil.baseUrl changes"
        )

    async def test_kept_header_values_do_not_follow_a_new_base_url(
        self, providers: Gateway
    ) -> None:
        new = {"baseUrl": "https://attacker.example/v1", "headers": {"x-team": "red"}}
        message = await self.refused(providers, {"models": {"providers": {"corp": new}}})
        assert message == (
            "invalid config.patch params: at /raw: models.providers.corp.headers.x-api-token"
            f" must be sent again when models.providers.corp.baseUrl changes {NOT_SENT}"
        )

    async def test_a_new_base_url_with_the_key_sent_again_applies(self, providers: Gateway) -> None:
        ws = await providers.connected()
        new = {"baseUrl": "https://proxy.example/v1", "apiKey": "sk-kept-secret"}
        frame = await patch(ws, {"models": {"providers": {"openai": new}}}, file_hash(providers))
        assert frame["ok"] is True, frame
        written = json.loads(providers.config_path.read_text())["models"]["providers"]["openai"]
        assert written == new
        await ws.ws.close()

    async def test_a_redacted_key_stays_when_its_url_stays(self, providers: Gateway) -> None:
        ws = await providers.connected()
        new = {"apiKey": REDACTED, "headers": {"x-api-token": REDACTED, "x-team": "red"}}
        frame = await patch(ws, {"models": {"providers": {"corp": new}}}, file_hash(providers))
        assert frame["ok"] is True, frame
        written = json.loads(providers.config_path.read_text())["models"]["providers"]
        assert written["corp"]["headers"] == {"x-api-token": "corp-kept-secret", "x-team": "red"}
        assert written["openai"]["apiKey"] == "sk-kept-secret"
        await ws.ws.close()


class TestConfigPatchCannotWeakenAuth:
    @pytest.mark.parametrize(
        ("auth", "message"),
        [
            ({"mode": "none"}, 'gateway.auth.mode: a patch may not turn auth off ("none")'),
            (
                {"rateLimit": False},
                "gateway.auth.rateLimit: a patch may not turn the failed-auth limiter off",
            ),
            (
                {"rateLimit": {"maxAttempts": 1000}},
                "gateway.auth.rateLimit.maxAttempts: a patch may not loosen the failed-auth"
                " limiter",
            ),
            (
                {"rateLimit": {"lockoutMs": 1}},
                "gateway.auth.rateLimit.lockoutMs: a patch may not loosen the failed-auth limiter",
            ),
        ],
    )
    async def test_refused(self, ws: GatewayWs, gateway: Gateway, auth: dict, message: str) -> None:
        before = gateway.config_path.read_bytes()
        frame = await patch(ws, {"gateway": {"auth": auth}}, file_hash(gateway))
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": f"invalid config.patch params: at /raw: {message};"
            " only an edit of the file may do that",
        }
        assert gateway.config_path.read_bytes() == before

    @pytest.mark.parametrize("proxies", [["0.0.0.0/0"], ["127.0.0.1"], ["::/0"]])
    async def test_a_new_trusted_proxy_is_refused(
        self, ws: GatewayWs, gateway: Gateway, proxies: list[str]
    ) -> None:
        # A trusted peer names the client the limiter counts (X-Forwarded-For): trusting
        # everyone would give every guess a fresh address, the limiter off by another name.
        before = gateway.config_path.read_bytes()
        frame = await patch(ws, {"gateway": {"trustedProxies": proxies}}, file_hash(gateway))
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "invalid config.patch params: at /raw: gateway.trustedProxies: a patch"
            f" may not trust a new proxy ({proxies[0]}); only an edit of the file may do that",
        }
        assert gateway.config_path.read_bytes() == before

    async def test_fewer_or_narrower_trusted_proxies_apply(self, make_gateway: MakeGateway) -> None:
        gateway = await make_gateway(
            CONFIG.replace(
                'token: "test-token" },',
                'token: "test-token" }, trustedProxies: ["10.0.0.0/8", "::1"],',
            )
        )
        ws = await gateway.connected()
        narrower = {"gateway": {"trustedProxies": ["10.1.0.0/16", "10.2.3.4"]}}
        frame = await patch(ws, narrower, file_hash(gateway))
        assert frame["ok"] is True, frame
        assert frame["payload"]["config"]["gateway"]["trustedProxies"] == [
            "10.1.0.0/16",
            "10.2.3.4",
        ]
        await ws.ws.close()

    async def test_a_limiter_window_too_large_to_count_is_refused_and_the_limiter_counts_on(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        """A longer window looks stricter, but one beyond a float made every failed auth a
        500 that counted nothing: the limiter off, and unlimited guesses."""
        before = gateway.config_path.read_bytes()
        huge = {"gateway": {"auth": {"rateLimit": {"windowMs": 10**400}}}}
        frame = await patch(ws, huge, file_hash(gateway))
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "invalid config.patch params: at /raw: gateway.auth.rateLimit.windowMs:"
            " must be a finite number (got an integer of more than 308 digits)",
        }
        assert gateway.config_path.read_bytes() == before
        wrong = {"Authorization": "Bearer wrong"}
        statuses = [
            (await gateway.client.get("/v1/models", headers=wrong)).status for _ in range(11)
        ]
        assert statuses == [401] * 10 + [429]

    async def test_a_stricter_limiter_applies(self, ws: GatewayWs, gateway: Gateway) -> None:
        frame = await patch(
            ws, {"gateway": {"auth": {"rateLimit": {"maxAttempts": 3}}}}, file_hash(gateway)
        )
        assert frame["ok"] is True, frame
        assert frame["payload"]["config"]["gateway"]["auth"]["rateLimit"]["maxAttempts"] == 3

    async def test_a_file_that_turned_the_limiter_off_may_still_be_patched(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(
            CONFIG.replace('token: "test-token"', 'token: "test-token", rateLimit: false')
        )
        ws = await gateway.connected()
        frame = await patch(ws, {"logging": {"level": "debug"}}, file_hash(gateway))
        assert frame["ok"] is True, frame
        assert frame["payload"]["config"]["gateway"]["auth"]["rateLimit"] is False
        await ws.ws.close()


def refusal(message: str) -> dict:
    return {
        "code": "INVALID_REQUEST",
        "message": f"invalid config.patch params: at /raw: {message};"
        " only an edit of the file may do that",
    }


class TestConfigPatchCannotWidenExposure:
    """What reaches the gateway (origins, hosts, the bind, an unauthenticated /metrics) is
    widened only by an edit of the file: a patch that did it would open the gateway, with
    auth `none` on loopback entirely, to every web page the user visits."""

    @pytest.mark.parametrize(
        ("gateway_patch", "message"),
        [
            (
                {"http": {"cors": {"allowedOrigins": ["*"]}}},
                "gateway.http.cors.allowedOrigins: a patch may not allow a new origin (*)",
            ),
            (
                {"http": {"cors": {"allowedOrigins": ["https://evil.example"]}}},
                "gateway.http.cors.allowedOrigins: a patch may not allow a new origin"
                " (https://evil.example)",
            ),
            (
                {"controlUi": {"allowedOrigins": ["HTTPS://Evil.example"]}},
                "gateway.controlUi.allowedOrigins: a patch may not allow a new origin"
                " (https://evil.example)",
            ),
            (
                {"http": {"allowedHosts": ["evil.example"]}},
                "gateway.http.allowedHosts: a patch may not allow a new host (evil.example)",
            ),
            (
                {"metrics": {"public": True}},
                "gateway.metrics.public: a patch may not serve the metrics without auth",
            ),
            (
                {"bind": "lan"},
                "gateway.bind: a patch may not bind the gateway beyond loopback (0.0.0.0)",
            ),
            (
                {"ws": {"preAuth": {"maxConnections": 10**9}}},
                "gateway.ws.preAuth.maxConnections: a patch may not raise the cap on"
                " unauthenticated sockets",
            ),
            (
                {"ws": {"preAuth": {"maxPerAddress": 33}}},
                "gateway.ws.preAuth.maxPerAddress: a patch may not raise the cap on"
                " unauthenticated sockets",
            ),
            (
                {"bind": "custom", "customBindHost": "192.0.2.7"},
                "gateway.bind: a patch may not bind the gateway beyond loopback (192.0.2.7)",
            ),
        ],
    )
    async def test_refused(
        self, ws: GatewayWs, gateway: Gateway, gateway_patch: dict, message: str
    ) -> None:
        before = gateway.config_path.read_bytes()
        frame = await patch(ws, {"gateway": gateway_patch}, file_hash(gateway))
        assert frame["error"] == refusal(message)
        assert gateway.config_path.read_bytes() == before

    async def test_the_served_directory_is_not_patched(
        self, ws: GatewayWs, gateway: Gateway, tmp_path: Path
    ) -> None:
        (tmp_path / "index.html").write_text("<!doctype html>")
        before = gateway.config_path.read_bytes()
        frame = await patch(
            ws, {"gateway": {"controlUi": {"root": str(tmp_path)}}}, file_hash(gateway)
        )
        assert frame["error"] == refusal(
            "gateway.controlUi.root: a patch may not change the directory served at /"
        )
        assert gateway.config_path.read_bytes() == before

    async def test_a_base_path_moves_the_ui_and_a_bad_one_is_refused(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        frame = await patch(
            ws, {"gateway": {"controlUi": {"basePath": "/ops/"}}}, file_hash(gateway)
        )
        assert frame["ok"] is True, frame
        assert (await gateway.client.get("/")).status == 404
        assert (await gateway.client.get("/ops/")).status == 200
        before = gateway.config_path.read_bytes()
        frame = await patch(
            ws, {"gateway": {"controlUi": {"basePath": "/a/../v1"}}}, file_hash(gateway)
        )
        assert frame["ok"] is False, frame
        assert gateway.config_path.read_bytes() == before

    async def test_a_refused_origin_or_host_stays_shut_out(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        evil = "https://evil.example"
        for gateway_patch in (
            {"http": {"cors": {"allowedOrigins": [evil]}}},
            {"controlUi": {"allowedOrigins": [evil]}},
            {"http": {"allowedHosts": ["evil.example"]}},
            {"metrics": {"public": True}},
        ):
            frame = await patch(ws, {"gateway": gateway_patch}, file_hash(gateway))
            assert frame["ok"] is False, frame
        preflight = await gateway.client.options(
            "/v1/chat/completions",
            headers={"Origin": evil, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await gateway.client.ws_connect("/", headers={"Origin": evil})
        assert refused.value.status == 403
        rebound = await gateway.client.get("/v1/models", headers={"Host": "evil.example"})
        assert rebound.status == 421
        assert (await gateway.client.get("/metrics")).status == 401

    async def test_without_auth_on_loopback_a_page_stays_shut_out(
        self, make_gateway: MakeGateway
    ) -> None:
        # Any local process is admin here: CORS `*` would let every page the user opens
        # run turns and read their answers.
        gateway = await make_gateway(
            CONFIG.replace('auth: { mode: "token", token: "test-token" }', 'auth: { mode: "none" }')
        )
        ws = await gateway.connected(auth=None)
        cors = {"gateway": {"http": {"cors": {"allowedOrigins": ["*"]}}}}
        frame = await patch(ws, cors, file_hash(gateway))
        assert frame["error"] == refusal(
            "gateway.http.cors.allowedOrigins: a patch may not allow a new origin (*)"
        )
        page = {"Origin": "https://evil.example"}
        answer = await gateway.client.get("/v1/models", headers=page)
        assert answer.status == 200
        assert "Access-Control-Allow-Origin" not in answer.headers
        await ws.ws.close()

    async def test_narrower_or_unchanged_exposure_applies(self, make_gateway: MakeGateway) -> None:
        gateway = await make_gateway(
            CONFIG.replace(
                'token: "test-token" },',
                'token: "test-token" }, controlUi: { allowedOrigins: ["https://a.example",'
                ' "https://b.example"] }, metrics: { public: true },'
                ' http: { cors: { allowedOrigins: ["*"] }, allowedHosts: ["gw.example"],'
                " endpoints: { chatCompletions: { enabled: true } } },",
            ).replace("    http: { endpoints: { chatCompletions: { enabled: true } } },\n", "")
        )
        ws = await gateway.connected()
        narrower = {
            "gateway": {
                "controlUi": {"allowedOrigins": ["https://B.example"]},
                "http": {"cors": {"allowedOrigins": ["https://c.example"]}, "allowedHosts": []},
                "metrics": {"public": False},
                "ws": {"preAuth": {"maxConnections": 64, "maxPerAddress": 8}},
                "bind": "custom",
                "customBindHost": "127.0.0.2",
            }
        }
        frame = await patch(ws, narrower, file_hash(gateway))
        assert frame["ok"] is True, frame
        shown = frame["payload"]["config"]["gateway"]
        assert shown["controlUi"]["allowedOrigins"] == ["https://b.example"]
        assert shown["http"]["cors"]["allowedOrigins"] == ["https://c.example"]
        assert frame["payload"]["restart"]["paths"] == ["gateway.bind", "gateway.customBindHost"]
        await ws.ws.close()

    async def test_an_address_within_the_running_lan_bind_applies(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(CONFIG.replace("gateway: {", 'gateway: { bind: "lan",'))
        ws = await gateway.connected()
        one = {"gateway": {"bind": "custom", "customBindHost": "192.0.2.7"}}
        frame = await patch(ws, one, file_hash(gateway))
        assert frame["ok"] is True, frame
        assert frame["payload"]["restart"]["paths"] == ["gateway.bind", "gateway.customBindHost"]
        await ws.ws.close()

    async def test_a_bind_the_file_names_may_stay_in_later_patches(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        # Edited by hand to `lan`, which needs a restart: the running bind is still loopback,
        # and a patch of something else writes the file's `lan` back unchanged.
        text = gateway.config_path.read_text().replace("gateway: {", 'gateway: { bind: "lan",')
        gateway.config_path.write_text(text)
        frame = await patch(ws, {"logging": {"level": "debug"}}, file_hash(gateway))
        assert frame["ok"] is True, frame
        assert json.loads(gateway.config_path.read_text())["gateway"]["bind"] == "lan"

    @pytest.mark.parametrize(
        ("gateway_patch", "path"),
        [
            ({"http": {"cors": {"allowedOrigins": "*"}}}, "gateway.http.cors.allowedOrigins"),
            ({"controlUi": {"allowedOrigins": ["null"]}}, "gateway.controlUi.allowedOrigins[0]"),
            ({"http": {"allowedHosts": ["evil.example:80"]}}, "gateway.http.allowedHosts[0]"),
            ({"metrics": {"public": "yes"}}, "gateway.metrics.public"),
            ({"bind": "custom", "customBindHost": "::"}, "gateway.customBindHost"),
        ],
    )
    async def test_malformed_values_are_invalid_config(
        self, ws: GatewayWs, gateway: Gateway, gateway_patch: dict, path: str
    ) -> None:
        before = gateway.config_path.read_bytes()
        frame = await patch(ws, {"gateway": gateway_patch}, file_hash(gateway))
        assert frame["error"]["message"] == "invalid config", frame
        assert [i["path"] for i in frame["error"]["details"]["issues"]] == [path]
        assert gateway.config_path.read_bytes() == before


HOOKED = CONFIG.replace(
    "  agents:",
    '  hooks: { enabled: true, token: "hook-secret-1", allowedAgentIds: ["main"],'
    ' allowedSessionKeyPrefixes: ["hook:"] },\n  agents:',
)


class TestConfigPatchCannotWidenTheWebhooks:
    """The hook token is a credential of its own: webhooks a patch turned on would outlive the
    rotation of the gateway token that the patch came with, unnoticed by the owner."""

    async def test_turning_them_on_is_refused(self, ws: GatewayWs, gateway: Gateway) -> None:
        before = gateway.config_path.read_bytes()
        hooks = {"hooks": {"enabled": True, "token": "attacker-chosen"}}
        frame = await patch(ws, hooks, file_hash(gateway))
        assert frame["error"] == refusal("hooks.enabled: a patch may not turn the webhooks on")
        assert gateway.config_path.read_bytes() == before
        answer = await gateway.client.post(
            "/hooks/wake", json={"text": "x"}, headers={"Authorization": "Bearer attacker-chosen"}
        )
        assert answer.status == 404

    @pytest.mark.parametrize(
        ("hooks", "message"),
        [
            (
                {"allowedAgentIds": ["*"]},
                "hooks.allowedAgentIds: a patch may not let the webhooks run another agent (*)",
            ),
            (
                {"allowedAgentIds": None},
                "hooks.allowedAgentIds: a patch may not let the webhooks run another agent (any)",
            ),
            (
                {"allowRequestSessionKey": True},
                "hooks.allowRequestSessionKey: a patch may not let the webhooks choose their"
                " session",
            ),
            (
                {"allowedSessionKeyPrefixes": ["hook:", "agent:"]},
                "hooks.allowedSessionKeyPrefixes: a patch may not allow a new session key prefix"
                " (agent:)",
            ),
            (
                {"allowedSessionKeyPrefixes": None, "defaultSessionKey": "hook:x"},
                "hooks.allowedSessionKeyPrefixes: a patch may not allow a new session key prefix"
                " (any)",
            ),
        ],
    )
    async def test_widening_what_they_may_do_is_refused(
        self, make_gateway: MakeGateway, hooks: dict, message: str
    ) -> None:
        gateway = await make_gateway(HOOKED)
        ws = await gateway.connected()
        before = gateway.config_path.read_bytes()
        frame = await patch(ws, {"hooks": hooks}, file_hash(gateway))
        assert frame["error"] == refusal(message)
        assert gateway.config_path.read_bytes() == before
        await ws.ws.close()

    @pytest.mark.parametrize(
        ("default_key", "refused"),
        [
            ("main", "agent:main:main"),
            ("agent:main:ws-1", "agent:main:ws-1"),
            ("hook:inbox", None),
            ("agent:main:hook:inbox", None),
        ],
    )
    async def test_pointing_them_at_a_session_beyond_their_own_is_refused(
        self, make_gateway: MakeGateway, default_key: str, refused: str | None
    ) -> None:
        # Without prefixes or caller-chosen keys, every call has a fresh `hook:` session: a
        # default key of the main session would feed the hook senders' text into it.
        gateway = await make_gateway(
            CONFIG.replace(
                "  agents:", '  hooks: { enabled: true, token: "hook-secret-1" },\n  agents:'
            )
        )
        ws = await gateway.connected()
        before = gateway.config_path.read_bytes()
        frame = await patch(ws, {"hooks": {"defaultSessionKey": default_key}}, file_hash(gateway))
        if refused is None:
            assert frame["ok"] is True, frame
        else:
            assert frame["error"] == refusal(
                "hooks.defaultSessionKey: a patch may not point the webhooks at another"
                f" session ({refused})"
            )
            assert gateway.config_path.read_bytes() == before
        await ws.ws.close()

    async def test_a_hook_token_that_is_the_gateway_password_is_invalid(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(
            HOOKED.replace('mode: "token", token: "test-token"', 'password: "gw-password-7"')
        )
        ws = await gateway.connected(auth={"password": "gw-password-7"})
        before = gateway.config_path.read_bytes()
        frame = await patch(ws, {"hooks": {"token": "gw-password-7"}}, file_hash(gateway))
        assert frame["error"]["message"] == "invalid config", frame
        assert frame["error"]["details"]["issues"] == [
            {
                "path": "hooks.token",
                "message": "must not match the gateway auth password; set a distinct hooks.token",
            }
        ]
        assert gateway.config_path.read_bytes() == before
        await ws.ws.close()

    async def test_a_new_token_narrower_rights_or_turning_them_off_apply(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(HOOKED)
        ws = await gateway.connected()
        narrower = {
            "hooks": {
                "token": "hook-secret-2",
                "allowedSessionKeyPrefixes": ["hook:ci:"],
                "defaultSessionKey": "hook:ci:main",
            }
        }
        frame = await patch(ws, narrower, file_hash(gateway))
        assert frame["ok"] is True, frame
        answer = await gateway.client.post(
            "/hooks/wake", json={"text": "x"}, headers={"Authorization": "Bearer hook-secret-2"}
        )
        assert answer.status == 200, await answer.text()
        frame = await patch(ws, {"hooks": {"enabled": False}}, file_hash(gateway))
        assert frame["ok"] is True, frame
        # Off, what they may do is moot: a patch of it is no widening.
        frame = await patch(ws, {"hooks": {"allowedAgentIds": ["*"]}}, file_hash(gateway))
        assert frame["ok"] is True, frame
        await ws.ws.close()


# JSON5 text that takes json5's parser a second or more (it reads some 100-300 KB a second):
# a call that parses it on the event loop holds up every other client meanwhile.
SLOW_TO_PARSE = 50_000


class TestConfigCallsParseOffTheLoop:
    """The calls' order on one connection shows it: `health`, sent after a call that parses
    for a second or more, is answered first only if that parse let the loop run."""

    async def test_a_patch_that_is_slow_to_parse_holds_up_no_other_call(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        raw = json.dumps(
            {"agents": {"list": [{"id": "main", "systemPrompt": "x" * SLOW_TO_PARSE}]}}
        )
        slow = await ws.request("config.patch", {"raw": raw + " ]", "baseHash": file_hash(gateway)})
        quick = await ws.request("health")
        first = await ws.wait_for(lambda f: f.get("type") == "res", wait=60)
        assert first["id"] == quick, first
        refused = await ws.response(slow, wait=60)
        assert refused["error"]["message"].startswith(
            "invalid config.patch params: at /raw: not valid JSON5"
        )

    async def test_config_get_of_a_large_file_holds_up_no_other_call(
        self, ws: GatewayWs, gateway: Gateway
    ) -> None:
        text = gateway.config_path.read_text().replace(
            '{ id: "main", default: true }',
            f'{{ id: "main", default: true, systemPrompt: "{"x" * SLOW_TO_PARSE}" }}',
        )
        assert text != gateway.config_path.read_text()
        gateway.config_path.write_text(text)
        slow = await ws.request("config.get")
        quick = await ws.request("health")
        first = await ws.wait_for(lambda f: f.get("type") == "res", wait=60)
        assert first["id"] == quick, first
        answer = await ws.response(slow, wait=60)
        assert answer["ok"] is True and answer["payload"]["valid"] is True


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts json5 parses from now on (json5.loads goes through json5.lib.parse)."""
    texts: list[str] = []
    parse = json5.lib.parse

    def counted(s: str, **kwargs: object) -> object:
        texts.append(s)
        return parse(s, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(json5, "parse", counted)
    monkeypatch.setattr(json5.lib, "parse", counted)
    return texts


class TestConfigGetParsesAFileOnce:
    """Any operator.read client may ask, 64 calls at a time per connection: the file's parse
    (seconds for a large one) is shared by every call while the file stays the same."""

    async def test_concurrent_and_repeated_calls_share_one_parse(
        self, make_gateway: MakeGateway, parses: list[str]
    ) -> None:
        text = CONFIG.replace(
            '{ id: "main", default: true }',
            f'{{ id: "main", default: true, systemPrompt: "{"x" * SLOW_TO_PARSE}" }}',
        )
        assert text != CONFIG
        ws = await (await make_gateway(text)).connected()
        parses.clear()  # the gateway's own load
        calls = [await ws.request("config.get") for _ in range(8)]
        answers = [await ws.response(call, wait=120) for call in calls]
        answers.append(await ws.call("config.get"))
        assert [a["payload"] for a in answers] == [answers[0]["payload"]] * 9
        assert answers[0]["payload"]["valid"] is True
        assert parses.count(text) == 1

    async def test_a_changed_file_is_seen_at_once(
        self, ws: GatewayWs, gateway: Gateway, parses: list[str]
    ) -> None:
        """Even one of the same size, inode and modification time (an edit within the
        filesystem's clock tick)."""
        before = await ws.ok("config.get")
        info = gateway.config_path.stat()
        text = gateway.config_path.read_text()
        changed = text.replace('"test-token"', '"test-tokem"')
        with gateway.config_path.open("r+") as file:
            file.write(changed)
        os.utime(gateway.config_path, ns=(info.st_atime_ns, info.st_mtime_ns))
        after_info = gateway.config_path.stat()
        assert (after_info.st_ino, after_info.st_size, after_info.st_mtime_ns) == (
            info.st_ino,
            info.st_size,
            info.st_mtime_ns,
        )
        after = await ws.ok("config.get")
        assert after["hash"] == file_hash(gateway) != before["hash"]
        assert parses.count(changed) == 1

    async def test_a_file_that_no_longer_parses_is_seen_at_once(
        self, ws: GatewayWs, gateway: Gateway, parses: list[str]
    ) -> None:
        await ws.ok("config.get")
        gateway.config_path.write_text("{ nope")
        after = await ws.ok("config.get")
        assert (after["raw"], after["parsed"], after["valid"]) == (None, None, False)
        assert after["issues"] == [
            {
                "path": "<file>",
                "message": "JSON5 syntax error: Unexpected end of input (line 1, column 7)",
            }
        ]


class TestConfigGetBuildsTheEffectiveConfigOnce:
    """The running config cannot change, and its redacted effective form (agents x
    fallbacks: MBs) was built again for every call: one build per loaded config now."""

    async def test_concurrent_and_repeated_calls_share_one_build_until_a_new_config(
        self, make_gateway: MakeGateway
    ) -> None:
        chain = {"primary": "echo/echo", "fallbacks": ["echo/echo"] * 50}
        agents = [{"id": f"a{i}"} for i in range(100)]
        text = CONFIG.replace(
            'agents: { list: [{ id: "main", default: true }] }',
            f"agents: {json.dumps({'defaults': {'model': chain}, 'list': agents})}",
        )
        gateway = await make_gateway(text)
        shown = gateway.app[WS].running_config
        ws = await gateway.connected()
        calls = [await ws.request("config.get") for _ in range(8)]
        answers = [await ws.response(call, wait=60) for call in calls]
        answers.append(await ws.call("config.get"))
        configs = [a["payload"]["config"] for a in answers]
        assert configs == [configs[0]] * 9
        assert len(configs[0]["agents"]["list"]) == 100
        assert shown.builds == 1
        patch = {"agents": {"defaults": {"model": {"fallbacks": []}}}}
        patched = await ws.ok(
            "config.patch", {"raw": json.dumps(patch), "baseHash": file_hash(gateway)}
        )
        assert shown.builds == 2
        after = await ws.ok("config.get")
        assert after["config"] == patched["config"] != configs[0]
        assert len(configs[0]["agents"]["list"][0]["model"]["fallbacks"]) == 50
        assert after["config"]["agents"]["list"][0]["model"] == "echo/echo"
        assert shown.builds == 2


class TestConfigGetAnswerFitsMaxPayload:
    async def test_an_answer_larger_than_max_payload_is_an_error_that_says_so(
        self, make_gateway: MakeGateway
    ) -> None:
        """Each agent's effective entry lists the default chain, so a small file can have
        an effective config of agents x fallbacks (here 600 KB from 9 KB); a client reads no
        frame over the maxPayload hello-ok announced, so it would lose the connection."""
        chain = {"primary": "echo/echo", "fallbacks": ["echo/echo"] * 200}
        agents = [{"id": f"a{i}"} for i in range(250)]
        text = CONFIG.replace(
            'agents: { list: [{ id: "main", default: true }] }',
            f"agents: {json.dumps({'defaults': {'model': chain}, 'list': agents})}",
        )
        assert len(text) < 10_000
        limit = 256 * 1024
        gateway = await make_gateway(text, settings=WsSettings(max_payload=limit))
        ws = await gateway.connected()
        frame = await ws.call("config.get")
        assert frame["error"]["code"] == "UNAVAILABLE"
        assert frame["error"]["message"] == (
            f"config.get answer too large: over maxPayload ({limit} bytes)"
        )
        assert (await ws.call("health"))["ok"] is True  # the connection stays

    async def test_an_answer_of_exactly_max_payload_is_sent(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway()
        ws = await gateway.connected()
        size = len(json.dumps(await ws.ok("config.get"), separators=(",", ":")).encode())
        envelope = len('{"type":"res","id":"r-12345678","ok":true,"payload":}')
        gateway = await make_gateway(settings=WsSettings(max_payload=size + envelope))
        ws = await gateway.connected()
        assert (await ws.call("config.get"))["ok"] is True
        gateway = await make_gateway(settings=WsSettings(max_payload=size + envelope - 1))
        ws = await gateway.connected()
        assert (await ws.call("config.get"))["error"]["code"] == "UNAVAILABLE"


# What a gateway under a file-size limit may write: its store's files at start stay under it.
# RLIMIT_FSIZE fails the write with EFBIG, as a full disk fails it with ENOSPC and the systemd
# unit's read-only /etc with EROFS, and it does so for root too.
FILE_SIZE_LIMIT = 128 * 1024

LIMITED_RUN = (
    sys.executable,
    "-c",
    "import os, resource, sys;"
    f"resource.setrlimit(resource.RLIMIT_FSIZE, ({FILE_SIZE_LIMIT}, resource.RLIM_INFINITY));"
    "os.execv(sys.executable, [sys.executable, '-m', 'gateway', 'run', *sys.argv[1:]])",
)


async def answer_to(ws: aiohttp.ClientWebSocketResponse, request_id: str) -> dict:
    while True:  # events (presence, tick) may come first
        frame = await ws.receive_json(timeout=30)
        if frame.get("type") == "res" and frame.get("id") == request_id:
            return frame


class TestConfigPatchWhenTheFileCannotBeWritten:
    async def test_the_error_says_why_and_nothing_changes(self, tmp_path: Path) -> None:
        config = tmp_path / "clawgate.json5"
        config.write_text(
            json.dumps(
                {
                    "gateway": {"auth": {"mode": "token", "token": PROCESS_TOKEN}},
                    "agents": {"list": [{"id": "main", "default": True}]},
                }
            )
        )
        before = config.read_bytes()
        args = ["--config", str(config), "--state-dir", str(tmp_path / "state"), "--port", "0"]
        process = GatewayProcess(args, clean_env(tmp_path / "home"), command=LIMITED_RUN)
        try:
            url = process.wait_listening()
            async with aiohttp.ClientSession() as http:
                ws = await connect_ws(http, url)
                await ws.send_json({"type": "req", "id": "get", "method": "config.get"})
                base_hash = (await answer_to(ws, "get"))["payload"]["hash"]
                prompt = "x" * FILE_SIZE_LIMIT  # the new file is over the limit
                raw = {
                    "agents": {"list": [{"id": "main", "default": True, "systemPrompt": prompt}]}
                }
                params = {"raw": json.dumps(raw), "baseHash": base_hash}
                await ws.send_json(
                    {"type": "req", "id": "patch", "method": "config.patch", "params": params}
                )
                assert await answer_to(ws, "patch") == {
                    "type": "res",
                    "id": "patch",
                    "ok": False,
                    "error": {
                        "code": "UNAVAILABLE",
                        "message": "cannot write the config file: File too large",
                    },
                }
                await ws.send_json({"type": "req", "id": "again", "method": "config.get"})
                after = (await answer_to(ws, "again"))["payload"]
                assert after["hash"] == base_hash
                assert after["config"]["agents"]["list"][0].get("systemPrompt", "") == ""
                await ws.close()
            assert config.read_bytes() == before
            assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []
            events = process.events()
            failed = [e for e in events if e.get("event") == "config_patch_write_failed"]
            assert [(e["level"], e["path"], e["error"]) for e in failed] == [
                ("warning", str(config), "File too large")
            ]
            assert not [e for e in events if e.get("event") == "ws_method_failed"]
        finally:
            process.stop()


def bind_mounts() -> bool:
    """Whether this host lets a test bind-mount a file in a mount namespace of its own."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "mount", "--bind", "/", "/mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


class TestConfigPatchOfABindMountedFile:
    async def test_a_file_system_too_full_for_the_new_text_leaves_the_file_as_it_was(
        self, tmp_path: Path
    ) -> None:
        """Written in place, the new text overwrote the old one until the disk was full: the
        file was left half new, which the next start refuses (78), the service down."""
        if not bind_mounts():
            pytest.skip("needs root and unshare to bind-mount a file")
        before = json.dumps({"gateway": {"auth": {"mode": "token", "token": PROCESS_TOKEN}}})
        (tmp_path / "host.json5").write_text(before)
        config = tmp_path / "clawgate.json5"  # what the gateway sees: the full disk's file
        config.write_text("{}")
        disk = tmp_path / "disk"
        disk.mkdir()
        mounted = (
            "unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs -o size=64k tmpfs "$1" && cp "$2" "$1/host.json5"'
            ' && mount --bind "$1/host.json5" "$3" && { cat /dev/zero > "$1/filler"'
            ' 2>/dev/null; shift 3; exec "$@"; }',
            "sh", str(disk), str(tmp_path / "host.json5"), str(config),
            sys.executable, "-m", "gateway", "run",
        )  # fmt: skip
        args = ["--config", str(config), "--state-dir", str(tmp_path / "state"), "--port", "0"]
        process = GatewayProcess(args, clean_env(tmp_path / "home"), command=mounted)
        try:
            url = process.wait_listening()
            async with aiohttp.ClientSession() as http:
                ws = await connect_ws(http, url)
                await ws.send_json({"type": "req", "id": "get", "method": "config.get"})
                base_hash = (await answer_to(ws, "get"))["payload"]["hash"]
                agent = {"id": "main", "default": True, "systemPrompt": "x" * 16384}
                params = {"raw": json.dumps({"agents": {"list": [agent]}}), "baseHash": base_hash}
                await ws.send_json(
                    {"type": "req", "id": "patch", "method": "config.patch", "params": params}
                )
                assert await answer_to(ws, "patch") == {
                    "type": "res",
                    "id": "patch",
                    "ok": False,
                    "error": {
                        "code": "UNAVAILABLE",
                        "message": "cannot write the config file: No space left on device",
                    },
                }
                await ws.send_json({"type": "req", "id": "again", "method": "config.get"})
                after = (await answer_to(ws, "again"))["payload"]
                assert after["hash"] == base_hash  # the file's bytes as they were
                await ws.close()
        finally:
            process.stop()

    async def test_the_file_is_rewritten_in_place(self, tmp_path: Path) -> None:
        """A container's config is often one file bind-mounted from the host (`docker run -v
        ./clawgate.json5:/…/clawgate.json5`): a rename onto a mount point fails (EBUSY), and
        every patch failed with `cannot write the config file: Device or resource busy`."""
        if not bind_mounts():
            pytest.skip("needs root and unshare to bind-mount a file")
        host_file = tmp_path / "host.json5"
        host_file.write_text(
            json.dumps(
                {
                    "gateway": {"auth": {"mode": "token", "token": PROCESS_TOKEN}},
                    "logging": {"level": "info"},
                }
            )
        )
        config = tmp_path / "clawgate.json5"  # what the gateway sees: the host's file
        config.write_text("{}")
        os.chmod(host_file, 0o640)
        mounted = (
            "unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(host_file), str(config),
            sys.executable, "-m", "gateway", "run",
        )  # fmt: skip
        args = ["--config", str(config), "--state-dir", str(tmp_path / "state"), "--port", "0"]
        process = GatewayProcess(args, clean_env(tmp_path / "home"), command=mounted)
        try:
            url = process.wait_listening()
            async with aiohttp.ClientSession() as http:
                ws = await connect_ws(http, url)
                await ws.send_json({"type": "req", "id": "get", "method": "config.get"})
                base_hash = (await answer_to(ws, "get"))["payload"]["hash"]
                params = {"raw": '{"logging": {"level": "debug"}}', "baseHash": base_hash}
                await ws.send_json(
                    {"type": "req", "id": "patch", "method": "config.patch", "params": params}
                )
                answer = await answer_to(ws, "patch")
                assert answer["ok"] is True, answer
                assert (
                    answer["payload"]["hash"] == hashlib.sha256(host_file.read_bytes()).hexdigest()
                )
                await ws.send_json({"type": "req", "id": "again", "method": "config.get"})
                after = (await answer_to(ws, "again"))["payload"]
                assert after["config"]["logging"]["level"] == "debug"
                await ws.close()
            assert json.loads(host_file.read_text())["logging"] == {"level": "debug"}
            assert stat.S_IMODE(host_file.stat().st_mode) == 0o640
            assert config.read_text() == "{}"  # outside the gateway's namespace: not its file
            assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []
        finally:
            process.stop()
