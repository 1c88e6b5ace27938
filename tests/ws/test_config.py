"""`config.get` and `config.patch` (ws-protocol.md §8; hot reload: config.md §7)."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from tests.ws.conftest import Gateway, GatewayWs, connect_params

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

    @pytest.mark.parametrize("raw", ["[1, 2]", '"text"', "3"])
    async def test_raw_must_be_an_object(self, ws: GatewayWs, gateway: Gateway, raw: str) -> None:
        frame = await patch(ws, raw, file_hash(gateway))
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "config.patch raw must be an object",
        }

    async def test_raw_must_be_json5(self, ws: GatewayWs, gateway: Gateway) -> None:
        frame = await patch(ws, "{nope", file_hash(gateway))
        assert frame["error"]["message"].startswith("invalid config.patch params: at /raw: ")

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

    async def test_listener_paths_need_a_restart(self, ws: GatewayWs, gateway: Gateway) -> None:
        frame = await patch(ws, {"gateway": {"port": 18800}}, file_hash(gateway))
        assert frame["payload"]["restart"] == {"required": True, "paths": ["gateway.port"]}

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

    async def test_without_a_loader(self, make_gateway) -> None:  # type: ignore[no-untyped-def]
        gateway = await make_gateway(with_loader=False)
        ws = await gateway.connected()
        frame = await patch(ws, {}, file_hash(gateway))
        assert frame["error"]["code"] == "UNAVAILABLE"
        await ws.ws.close()
