"""The handshake phase (ws-protocol.md §2-§5, §10): challenge, connect, every failure with
its response and close code, hello-ok, scopes, the first events."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid

import pytest

from gateway.appkeys import STATE
from gateway.reload import reload_from_file
from gateway.state import AppOptions
from gateway.ws.handler import WS
from gateway.ws.state import WsSettings
from tests.support.raw_http import exchange, exchange_upgrade, request_bytes
from tests.support.ws_client import (
    CONFIG,
    TOKEN,
    Gateway,
    GatewayWs,
    MakeGateway,
    connect_params,
    send,
    wire,
)

ALL_SCOPES = [
    "operator.admin",
    "operator.read",
    "operator.write",
    "operator.approvals",
    "operator.pairing",
]
MISMATCH_DETAILS = (
    '"details":{"code":"AUTH_TOKEN_MISMATCH","authReason":"token_mismatch",'
    '"canRetryWithDeviceToken":false,"recommendedNextStep":"update_auth_credentials"}'
)
MISSING_DETAILS = (
    '"details":{"code":"AUTH_TOKEN_MISSING","authReason":"token_missing",'
    '"canRetryWithDeviceToken":false,"recommendedNextStep":"update_auth_configuration"}'
)
PASSWORD_CONFIG = CONFIG.replace('mode: "token", token: "test-token"', 'password: "pw-1"')


async def first_frame_then_close(
    ws: GatewayWs, frame: object
) -> tuple[list[dict], int | None, str]:
    challenge = await ws.recv()
    assert challenge["event"] == "connect.challenge"
    await ws.send(frame)
    code, reason = await ws.closed()
    return ws.frames[1:], code, reason


async def rejected_connect(ws: GatewayWs, params: dict) -> tuple[str, int | None, str]:
    """The response to a connect (as on the wire) and the close that followed it."""
    frames, code, reason = await first_frame_then_close(
        ws, {"type": "req", "id": "c-1", "method": "connect", "params": params}
    )
    assert len(frames) == 1, frames
    return wire(frames[0]), code, reason


class TestChallenge:
    async def test_the_server_speaks_first_with_a_challenge(self, raw_ws: GatewayWs) -> None:
        frame = await raw_ws.recv()
        assert list(frame) == ["type", "event", "payload"]  # no seq (§9.1)
        assert frame["type"] == "event" and frame["event"] == "connect.challenge"
        payload = frame["payload"]
        assert list(payload) == ["nonce", "ts", "capabilities"]
        uuid.UUID(payload["nonce"])
        assert isinstance(payload["ts"], int) and payload["capabilities"] == []

    async def test_any_path_is_the_gateway_websocket(self, gateway: Gateway) -> None:
        ws = await gateway.raw("/some/where/else")
        hello = await ws.connect()
        assert hello["ok"] is True
        await ws.ws.close()


UPGRADE = {
    b"Upgrade": b"websocket",
    b"Connection": b"Upgrade",
    b"Sec-WebSocket-Key": b"dGhlIHNhbXBsZSBub25jZQ==",
    b"Sec-WebSocket-Version": b"13",
}


class TestUpgradeRequest:
    @pytest.mark.parametrize(
        ("name", "value"),
        [
            (b"Sec-WebSocket-Key", b"\xff"),
            (b"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==\u00e9".encode()),
            (b"Sec-WebSocket-Version", b"\xff"),
            (b"Upgrade", b"websocket, \xed\xa0\x80"),
            (b"Connection", b"\xff"),
        ],
    )
    async def test_a_handshake_header_that_is_not_text_is_a_400(
        self, gateway: Gateway, name: bytes, value: bytes
    ) -> None:
        headers = {b"Host": b"127.0.0.1", **UPGRADE, name: value}
        head = b"GET / HTTP/1.1\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers.items())
        assert gateway.client.port is not None
        response = await exchange_upgrade(gateway.client.port, head + b"\r\n")
        assert (response.status, response.body) == (
            400,
            b'{"error":{"message":"Invalid WebSocket upgrade request.",'
            b'"type":"invalid_request_error","param":null,"code":null}}',
        )


class TestFirstFrameFailures:
    async def test_no_frame_within_the_timeout_closes_1000(self, make_gateway: MakeGateway) -> None:
        gateway = await make_gateway(options=AppOptions(handshake_timeout_seconds=0.2))
        ws = await gateway.raw()
        await ws.recv()
        assert await ws.closed() == (1000, "")
        assert len(ws.frames) == 1  # only the challenge: no response

    async def test_pings_do_not_stretch_the_handshake_timeout(
        self, make_gateway: MakeGateway
    ) -> None:
        # A ping is a frame but not the first request: a client that only pings holds a
        # pre-auth slot for as long as it likes unless the deadline counts from the open.
        gateway = await make_gateway(options=AppOptions(handshake_timeout_seconds=0.5))
        ws = await gateway.raw()
        await ws.recv()

        async def ping_often() -> None:
            while True:
                await ws.ws.ping()
                await asyncio.sleep(0.1)

        pinger = asyncio.create_task(ping_often())
        try:
            assert await ws.closed(wait=3.0) == (1000, "")
        finally:
            pinger.cancel()
        assert len(ws.frames) == 1  # only the challenge: no response

    async def test_not_json_closes_1000_without_a_response(self, raw_ws: GatewayWs) -> None:
        frames, code, reason = await first_frame_then_close(raw_ws, "this is not json")
        assert (frames, code, reason) == ([], 1000, "")

    async def test_a_binary_frame_closes_as_non_json(self, raw_ws: GatewayWs) -> None:
        await raw_ws.recv()
        await raw_ws.ws.send_bytes(b'{"type":"req"}')
        assert await raw_ws.closed() == (1000, "")

    @pytest.mark.parametrize(
        "frame",
        [
            [1, 2],
            {"type": "event", "id": "x", "method": "connect"},
            {"type": "req", "id": "", "method": "connect"},
            {"type": "req", "id": "c" * 257, "method": "connect"},
            {"type": "req", "id": "x", "method": 5},
        ],
    )
    async def test_not_a_request_frame_closes_1008(self, raw_ws: GatewayWs, frame: object) -> None:
        frames, code, reason = await first_frame_then_close(raw_ws, frame)
        assert (frames, code, reason) == ([], 1008, "invalid request frame")

    async def test_a_first_request_other_than_connect_is_answered_then_closed(
        self, raw_ws: GatewayWs
    ) -> None:
        frames, code, reason = await first_frame_then_close(
            raw_ws, {"type": "req", "id": "first-1", "method": "health", "params": {}}
        )
        assert [wire(f) for f in frames] == [
            '{"type":"res","id":"first-1","ok":false,"error":{"code":"INVALID_REQUEST",'
            '"message":"invalid handshake: first request must be connect"}}'
        ]
        assert (code, reason) == (1008, "invalid handshake: first request must be connect")

    async def test_an_oversized_preauth_frame_closes_1009(self, raw_ws: GatewayWs) -> None:
        big = {"type": "req", "id": "c", "method": "connect", "params": {"x": "a" * 65536}}
        frames, code, reason = await first_frame_then_close(raw_ws, big)
        assert (frames, code, reason) == ([], 1009, "preauth payload too large")


class TestConnectFailures:
    @pytest.mark.parametrize(
        ("params", "detail"),
        [
            (
                connect_params(client={"id": 5, "version": "1", "platform": "l", "mode": "cli"}),
                "at /client/id: must be string",
            ),
            (connect_params(client=None), "at /client: is required"),
            (connect_params(minProtocol="4"), "at /minProtocol: must be integer"),
            (
                connect_params(minProtocol=4, maxProtocol=3),
                "at /minProtocol: must be <= maxProtocol",
            ),
            (connect_params(scopes="operator.read"), "at /scopes: must be array"),
            (connect_params(auth={"token": 1}), "at /auth/token: must be string"),
        ],
    )
    async def test_invalid_params(self, raw_ws: GatewayWs, params: dict, detail: str) -> None:
        body, code, reason = await rejected_connect(raw_ws, params)
        message = f"invalid connect params: {detail}"
        assert body == (
            '{"type":"res","id":"c-1","ok":false,"error":{"code":"INVALID_REQUEST",'
            f'"message":"{message}"}}}}'
        )
        assert (code, reason) == (1008, message)

    @pytest.mark.parametrize(
        "field",
        [
            "id",
            "version",
            "platform",
            "mode",
            "displayName",
            "deviceFamily",
            "modelIdentifier",
            "instanceId",
        ],
    )
    async def test_a_client_field_longer_than_256_characters(
        self, raw_ws: GatewayWs, field: str
    ) -> None:
        # Kept in the presence book and sent in every `presence` event to every client.
        client = {"id": "test", "version": "1.0", "platform": "linux", "mode": "cli"}
        body, code, reason = await rejected_connect(
            raw_ws, connect_params(client={**client, field: "x" * 257})
        )
        message = f"invalid connect params: at /client/{field}: must have at most 256 characters"
        assert body == (
            '{"type":"res","id":"c-1","ok":false,"error":{"code":"INVALID_REQUEST",'
            f'"message":"{message}"}}}}'
        )
        assert (code, reason) == (1008, message)

    async def test_client_fields_of_256_characters_are_accepted(self, raw_ws: GatewayWs) -> None:
        long = "x" * 256
        client = {"id": long, "version": long, "platform": long, "mode": long}
        client |= {"displayName": long, "deviceFamily": long, "modelIdentifier": long}
        hello = await raw_ws.connect(client={**client, "instanceId": long})
        assert hello["ok"] is True

    async def test_protocol_mismatch(self, raw_ws: GatewayWs) -> None:
        body, code, reason = await rejected_connect(
            raw_ws, connect_params(minProtocol=99, maxProtocol=99)
        )
        assert body == (
            '{"type":"res","id":"c-1","ok":false,"error":{"code":"INVALID_REQUEST",'
            '"message":"protocol mismatch","details":{"code":"PROTOCOL_MISMATCH",'
            '"clientMinProtocol":99,"clientMaxProtocol":99,"expectedProtocol":4,'
            '"minimumProbeProtocol":3}}}'
        )
        assert (code, reason) == (1002, "protocol mismatch")

    async def test_too_old_a_client_is_a_mismatch_too(self, raw_ws: GatewayWs) -> None:
        _, code, _ = await rejected_connect(raw_ws, connect_params(minProtocol=1, maxProtocol=2))
        assert code == 1002

    @pytest.mark.parametrize(
        ("client_id", "hint"),
        [
            ("cli", "use this gateway's gateway.auth.token or pair the device"),
            ("gateway-client", "provide gateway auth token"),
        ],
    )
    async def test_wrong_token(self, raw_ws: GatewayWs, client_id: str, hint: str) -> None:
        client = {"id": client_id, "version": "2026.9.6", "platform": "linux", "mode": "cli"}
        body, code, reason = await rejected_connect(
            raw_ws, connect_params(client=client, auth={"token": "wrong-token"})
        )
        message = f"unauthorized: gateway token mismatch ({hint})"
        assert body == (
            '{"type":"res","id":"c-1","ok":false,"error":{"code":"INVALID_REQUEST",'
            f'"message":"{message}",{MISMATCH_DETAILS}}}}}'
        )
        assert (code, reason) == (1008, message)

    @pytest.mark.parametrize(
        ("client_id", "hint"),
        [
            ("cli", "use this gateway's gateway.auth.token or pair the device"),
            ("openclaw-tui", "provide gateway auth token"),
        ],
    )
    async def test_missing_token(self, raw_ws: GatewayWs, client_id: str, hint: str) -> None:
        client = {"id": client_id, "version": "2026.9.6", "platform": "linux", "mode": "ui"}
        body, code, reason = await rejected_connect(
            raw_ws, connect_params(client=client, auth=None)
        )
        message = f"unauthorized: gateway token missing ({hint})"
        assert body == (
            '{"type":"res","id":"c-1","ok":false,"error":{"code":"INVALID_REQUEST",'
            f'"message":"{message}",{MISSING_DETAILS}}}}}'
        )
        assert (code, reason) == (1008, message)

    @pytest.mark.parametrize(
        ("auth", "problem", "step"),
        [
            ({"password": "nope"}, "mismatch", "update_auth_credentials"),
            ({"token": TOKEN}, "missing", "update_auth_configuration"),
        ],
    )
    async def test_password_mode(
        self, make_gateway: MakeGateway, auth: dict, problem: str, step: str
    ) -> None:
        gateway = await make_gateway(PASSWORD_CONFIG)
        body, code, reason = await rejected_connect(await gateway.raw(), connect_params(auth=auth))
        message = f"unauthorized: gateway password {problem} (provide gateway auth password)"
        assert body == (
            '{"type":"res","id":"c-1","ok":false,"error":{"code":"INVALID_REQUEST",'
            f'"message":"{message}","details":{{"code":"AUTH_PASSWORD_{problem.upper()}",'
            f'"authReason":"password_{problem}","canRetryWithDeviceToken":false,'
            f'"recommendedNextStep":"{step}"}}}}}}'
        )
        assert (code, reason) == (1008, message)
        ws = await gateway.raw()
        hello = await ws.connect(auth={"password": "pw-1"})
        assert hello["ok"] is True and hello["payload"]["auth"]["method"] == "password"
        await ws.ws.close()

    async def test_a_token_is_trimmed_of_surrounding_whitespace_as_over_http(
        self, gateway: Gateway
    ) -> None:
        # The configured token is trimmed, and so is HTTP's bearer token (a pasted token often
        # ends in a newline): the same token opens both.
        padded = f"  {TOKEN}  "
        headers = {"Authorization": f"Bearer {padded}"}
        assert (await gateway.client.get("/v1/models", headers=headers)).status == 200
        ws = await gateway.raw()
        hello = await ws.connect(auth={"token": padded})
        assert hello["ok"] is True, hello
        await ws.ws.close()

    async def test_a_token_of_only_whitespace_is_missing(self, raw_ws: GatewayWs) -> None:
        client = {"id": "openclaw-tui", "version": "2026.9.6", "platform": "linux", "mode": "ui"}
        body, code, _ = await rejected_connect(
            raw_ws, connect_params(client=client, auth={"token": " \t "})
        )
        message = "unauthorized: gateway token missing (provide gateway auth token)"
        assert body == (
            '{"type":"res","id":"c-1","ok":false,"error":{"code":"INVALID_REQUEST",'
            f'"message":"{message}",{MISSING_DETAILS}}}}}'
        )
        assert code == 1008

    async def test_a_locked_out_address_is_refused_even_with_the_right_token(
        self, make_gateway: MakeGateway
    ) -> None:
        text = CONFIG.replace(
            'token: "test-token"',
            'token: "test-token", rateLimit: { maxAttempts: 2, exemptLoopback: false }',
        )
        gateway = await make_gateway(text)
        for _ in range(2):
            _, code, _ = await rejected_connect(
                await gateway.raw(), connect_params(auth={"token": "wrong"})
            )
            assert code == 1008
        body, code, reason = await rejected_connect(await gateway.raw(), connect_params())
        message = "unauthorized: too many failed authentication attempts (retry later)"
        assert body == (
            '{"type":"res","id":"c-1","ok":false,"error":{"code":"INVALID_REQUEST",'
            f'"message":"{message}","details":{{"code":"AUTH_RATE_LIMITED",'
            '"authReason":"rate_limited"},"retryable":true,"retryAfterMs":300000}}'
        )
        assert (code, reason) == (1008, message)

    async def test_a_missing_token_is_not_counted_by_the_limiter(
        self, make_gateway: MakeGateway
    ) -> None:
        text = CONFIG.replace(
            'token: "test-token"',
            'token: "test-token", rateLimit: { maxAttempts: 1, exemptLoopback: false }',
        )
        gateway = await make_gateway(text)
        await rejected_connect(await gateway.raw(), connect_params(auth=None))
        ws = await gateway.connected()
        await ws.ws.close()

    async def test_a_role_other_than_operator(self, raw_ws: GatewayWs) -> None:
        body, code, reason = await rejected_connect(raw_ws, connect_params(role="node"))
        assert body == (
            '{"type":"res","id":"c-1","ok":false,"error":{"code":"INVALID_REQUEST",'
            '"message":"invalid role"}}'
        )
        assert (code, reason) == (1008, "invalid role")


class TestHelloOk:
    def expected(self, gateway: Gateway, protocol: int, scopes: list[str]) -> dict:
        state_dir = str(gateway.state_dir)
        sessions = {"path": f"{state_dir}/sessions.sqlite3", "count": 0, "recent": []}
        health = {
            "ok": True,
            "ts": "<ts>",
            "durationMs": "<durationMs>",
            "defaultAgentId": "main",
            "agents": [{"agentId": "main", "isDefault": True, "sessions": sessions}],
            "sessions": sessions,
            "configReload": {"hotReloadStatus": "active", "lastError": None},
            "channels": {},
            "channelOrder": [],
            "channelLabels": {},
            "plugins": {"loaded": [], "errors": [], "unavailable": []},
        }
        payload = {
            "type": "hello-ok",
            "protocol": protocol,
            "server": {"version": "0.1.0", "connId": "<connId>"},
            "features": {
                "methods": [
                    "health",
                    "status",
                    "agents.list",
                    "models.list",
                    "sessions.list",
                    "sessions.patch",
                    "sessions.reset",
                    "sessions.delete",
                    "chat.send",
                    "chat.history",
                    "chat.abort",
                    "chat.subscribe",
                    "chat.unsubscribe",
                    "agent",
                    "agent.wait",
                    "config.get",
                    "config.patch",
                    "system-presence",
                    "logs.tail",
                    "sessions.preview",
                    "system.info",
                    "usage",
                    "usage.cost",
                    "sessions.subscribe",
                    "sessions.unsubscribe",
                    "sessions.describe",
                    "sessions.create",
                    "channels.status",
                    "cron.status",
                    "node.list",
                    "node.pair.list",
                    "device.pair.list",
                    "question.list",
                    "exec.approval.list",
                    "plugin.approval.list",
                    "openclaw.approval.list",
                    "taskSuggestions.list",
                    "environments.list",
                    "commands.list",
                    "skills.status",
                    "hooks.status",
                    "last-heartbeat",
                    "diagnostics.stability",
                    "worktrees.list",
                    "worktrees.gc",
                    "plugins.list",
                    "progressCard.get",
                    "sessions.branches.list",
                    "sessions.companion.state",
                    "sessions.companion.ask",
                    "sessions.companion.reset",
                    "update.status",
                    "sessions.observer.visibility",
                    "agent.identity.get",
                    "channels.pairing.list",
                    "usage.status",
                    "models.authStatus",
                    "talk.catalog",
                    "chat.metadata",
                    "tools.github.status",
                    "tools.github.configure",
                    "secrets.store.list",
                    "secrets.store.set",
                    "tools.github.authorize.start",
                    "tools.github.authorize.poll",
                    "tools.github.authorize.cancel",
                    "push.web.vapidPublicKey",
                    "push.web.subscribe",
                    "push.web.unsubscribe",
                    "push.web.preferences.get",
                    "push.web.preferences.set",
                    "push.web.test",
                    "push.test",
                    "doctor.memory.status",
                    "wizard.start",
                    "models.authSetApiKey",
                    "memory.search",
                    "cron.add",
                    "worktrees.create",
                    "worktrees.branches",
                    "agents.files.list",
                    "tools.catalog",
                    "tools.effective",
                    "doctor.memory.dreamDiary",
                    "config.schema.lookup",
                    "exec.approvals.get",
                    "exec.approvals.set",
                    "approval.history",
                    "exec.approval.grants.list",
                    "skills.library.list",
                    "skills.search",
                    "migrations.memory.plan",
                    "openclaw.setup.detect",
                    "openclaw.setup.verify",
                    "webSearch.status",
                    "artifacts.list",
                    "skills.proposals.list",
                    "plugins.catalog.browse",
                    "tasks.list",
                    "cron.list",
                    "cron.runs",
                    "sessions.messages.subscribe",
                    "sessions.messages.unsubscribe",
                    "chat.startup",
                    "themes.list",
                    "sessions.usage",
                    "sessions.usage.timeseries",
                    "sessions.usage.logs",
                    "diagnostics.lanes",
                    "transcripts.list",
                ],
                "events": [
                    "connect.challenge",
                    "tick",
                    "chat",
                    "agent",
                    "sessions.changed",
                    "presence",
                    "health",
                    "shutdown",
                ],
                "capabilities": ["published-model-catalog"],
            },
            "snapshot": {
                "presence": [
                    {
                        "host": "<host>",
                        "version": "0.1.0",
                        "platform": "linux",
                        "mode": "gateway",
                        "reason": "self",
                        "instanceId": "<instanceId>",
                        "text": f"Gateway: {socket.gethostname()} · app 0.1.0 · mode gateway"
                        " · reason self",
                        "ts": "<ts>",
                    },
                    {
                        "clientId": "test",
                        "mode": "cli",
                        "host": "<host>",
                        "version": "1.0",
                        "platform": "linux",
                        "instanceId": "<instanceId>",
                        "roles": ["operator"],
                        "scopes": scopes,
                        "onlineSince": "<onlineSince>",
                        "reason": "connect",
                        "text": "Node: unknown · mode cli",
                        "ts": "<ts>",
                    },
                ],
                "health": health,
                "stateVersion": {"presence": 1, "health": 1},
                "uptimeMs": "<uptimeMs>",
                "configPath": str(gateway.config_path),
                "stateDir": state_dir,
                "sessionDefaults": {
                    "defaultAgentId": "main",
                    "mainKey": "main",
                    "mainSessionKey": "agent:main:main",
                    "scope": "per-sender",
                },
                "authMode": "token",
            },
        }
        if protocol == 4:
            payload["auth"] = {"method": "token", "role": "operator", "scopes": scopes}
        payload["policy"] = {
            "maxPayload": 26214400,
            "maxBufferedBytes": 52428800,
            "tickIntervalMs": 30000,
        }
        return {"type": "res", "id": "<id>", "ok": True, "payload": payload}

    @pytest.mark.parametrize("protocol", [3, 4])
    async def test_exact_shape(self, gateway: Gateway, protocol: int) -> None:
        from tests.support.ws_client import normalized

        ws = await gateway.raw()
        hello = await ws.connect(minProtocol=3, maxProtocol=protocol)
        hello["id"] = "<id>"
        assert wire(normalized(hello)) == wire(self.expected(gateway, protocol, ALL_SCOPES))
        await ws.ws.close()

    async def test_the_highest_common_version_wins(self, gateway: Gateway) -> None:
        ws = await gateway.raw()
        hello = await ws.connect(minProtocol=1, maxProtocol=9)
        assert hello["payload"]["protocol"] == 4
        await ws.ws.close()

    @pytest.mark.parametrize(
        ("requested", "granted"),
        [
            (None, ALL_SCOPES),
            ([], ALL_SCOPES),
            (["operator.read"], ["operator.read"]),
            (["operator.write", "bogus", "operator.write"], ["operator.write"]),
            (["bogus"], []),
        ],
    )
    async def test_granted_scopes_are_the_requested_known_ones(
        self, gateway: Gateway, requested: list[str] | None, granted: list[str]
    ) -> None:
        ws = await gateway.raw()
        hello = await ws.connect(scopes=requested)
        assert hello["payload"]["auth"]["scopes"] == granted
        await ws.ws.close()

    async def test_auth_mode_none_accepts_any_connect(self, make_gateway: MakeGateway) -> None:
        gateway = await make_gateway(
            CONFIG.replace('mode: "token", token: "test-token"', 'mode: "none"')
        )
        ws = await gateway.raw()
        hello = await ws.connect(auth=None)
        assert hello["payload"]["auth"]["method"] == "none"
        await ws.ws.close()

    async def test_a_device_block_is_accepted_and_not_required(self, gateway: Gateway) -> None:
        device = {"id": "d", "publicKey": "k", "signature": "s", "signedAt": 1, "nonce": "n"}
        ws = await gateway.raw()
        hello = await ws.connect(device=device, caps=[], locale="en-US", unknownKey=1)
        assert hello["ok"] is True
        await ws.ws.close()


class TestAfterHello:
    async def test_health_event_then_ticks_with_a_per_connection_seq(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(options=AppOptions(tick_interval_seconds=0.05))
        ws = await gateway.raw()
        await ws.connect()
        health = await ws.recv()
        assert list(health) == ["type", "event", "payload", "seq", "stateVersion"]
        assert (health["event"], health["seq"]) == ("health", 1)
        assert health["stateVersion"] == {"presence": 1, "health": 1}
        assert health["payload"] == ws.hello["payload"]["snapshot"]["health"]
        ticks = [await ws.recv(), await ws.recv()]
        assert [(t["event"], t["seq"], list(t)) for t in ticks] == [
            ("tick", 2, ["type", "event", "payload", "seq"]),
            ("tick", 3, ["type", "event", "payload", "seq"]),
        ]
        assert isinstance(ticks[0]["payload"]["ts"], int)
        await ws.ws.close()

    async def test_periodic_health_events(self, make_gateway: MakeGateway) -> None:
        gateway = await make_gateway(options=AppOptions(health_interval_seconds=0.05))
        ws = await gateway.connected()
        again = await ws.event("health")
        assert again["seq"] == 2 and again["stateVersion"]["health"] >= 2
        await ws.ws.close()

    async def test_a_second_connect_is_refused_and_the_connection_stays(
        self, ws: GatewayWs
    ) -> None:
        frame = await ws.call("connect", connect_params())
        assert frame["error"] == {
            "code": "INVALID_REQUEST",
            "message": "connect is only valid as the first request",
        }
        assert (await ws.ok("health"))["ok"] is True


class TestARotatedSecret:
    """A connection lives on the secret it was opened with: once that is no longer the one in
    force (a leaked token rotated, a password set), it is closed as a gateway restart closes
    it (OpenClaw restarts on an auth change), and its client connects again with the secret
    it has now. The one whose `config.patch` made the change stays (it holds the new one)."""

    async def test_a_token_changed_in_the_file_closes_the_connections_of_the_old_one(
        self, gateway: Gateway
    ) -> None:
        old = await gateway.connected()
        gateway.config_path.write_text(CONFIG.replace('token: "test-token"', 'token: "rotated"'))
        await reload_from_file(gateway.app[STATE])
        assert await old.closed() == (1012, "gateway auth changed")
        fresh = await gateway.connected(auth={"token": "rotated"})
        assert (await fresh.call("health"))["ok"] is True
        await fresh.ws.close()

    async def test_a_token_that_is_no_utf_8_is_refused_and_the_old_one_stays(
        self, gateway: Gateway
    ) -> None:
        # A byte of another encoding (a Latin-1 `ä` in an environment file) reaches Python as
        # a lone surrogate, as `\udce4` in the file does. No WebSocket client can send it
        # (nor does one typing `ä`, which sends its UTF-8): a config issue, the running
        # token kept, its connections open.
        old = await gateway.connected()
        rotated = 'token: "rotated-\\udce4"'
        gateway.config_path.write_text(CONFIG.replace('token: "test-token"', rotated))
        assert await reload_from_file(gateway.app[STATE]) is None
        error = gateway.app[STATE].reload_error
        assert error is not None and error[0].startswith("- gateway.auth.token: is not valid UTF-8")
        assert (await old.call("health"))["ok"] is True
        port = gateway.client.port
        assert port is not None
        latin1 = request_bytes("GET", "/v1/models", {"Authorization": b"Bearer rotated-\xe4"})
        assert (await exchange(port, latin1)).status == 401

    async def test_a_change_that_keeps_the_secret_closes_nothing(self, gateway: Gateway) -> None:
        ws = await gateway.connected()
        gateway.config_path.write_text(CONFIG.replace("gateway: {", 'gateway: { mode: "local",'))
        await reload_from_file(gateway.app[STATE])
        await ws.event("health")  # the reload announced itself
        assert (await ws.call("health"))["ok"] is True
        await ws.ws.close()

    async def test_the_connection_that_patched_the_token_stays(self, gateway: Gateway) -> None:
        admin, other = await gateway.connected(), await gateway.connected()
        base = (await admin.ok("config.get"))["hash"]
        raw = json.dumps({"gateway": {"auth": {"token": "patched"}}})
        answer = await admin.call("config.patch", {"raw": raw, "baseHash": base})
        assert answer["ok"] is True, answer
        assert await other.closed() == (1012, "gateway auth changed")
        assert (await admin.call("health"))["ok"] is True
        await admin.ws.close()

    async def test_a_closed_connection_starts_no_call_it_sends_before_reading_the_close(
        self, gateway: Gateway
    ) -> None:
        old = await gateway.connected()
        gateway.config_path.write_text(CONFIG.replace('token: "test-token"', 'token: "rotated"'))
        await reload_from_file(gateway.app[STATE])
        await old.request("chat.send", send("late", "hi", "late-1"))  # the close not read yet
        assert (await old.closed())[0] == 1012
        registry = gateway.app[STATE].registry
        assert registry is not None and registry.run("late-1") is None

    async def test_a_connect_that_ends_after_the_rotation_is_closed_too(
        self, gateway: Gateway
    ) -> None:
        # Checked with the old token, then waiting for the health snapshot of hello-ok while
        # the token is rotated: it was not among the open connections the rotation closed.
        health = gateway.app[WS].health
        raw = await gateway.raw()
        await raw.recv()
        async with health._lock:  # the snapshot waits
            await raw.send(
                {"type": "req", "id": "c", "method": "connect", "params": connect_params()}
            )
            await asyncio.sleep(0.1)  # checked, and waiting
            gateway.config_path.write_text(
                CONFIG.replace('token: "test-token"', 'token: "rotated"')
            )
            await reload_from_file(gateway.app[STATE])
        code, reason = await raw.closed()
        assert (code, reason) == (1012, "gateway auth changed")
        assert [f for f in raw.frames if f.get("id") == "c" and f.get("ok")] == []

    async def test_a_request_waiting_for_a_slot_is_not_started_once_closed(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(settings=WsSettings(max_inflight_requests=1))
        old = await gateway.connected()
        await old.request("agent.wait", {"runId": "never", "timeoutMs": 300})
        await old.request("chat.send", send("late", "hi", "late-2"))  # waits for the slot
        gateway.config_path.write_text(CONFIG.replace('token: "test-token"', 'token: "rotated"'))
        await reload_from_file(gateway.app[STATE])
        await asyncio.sleep(0.6)  # the slot is free; the close is not read yet
        assert (await old.closed())[0] == 1012
        registry = gateway.app[STATE].registry
        assert registry is not None and registry.run("late-2") is None
