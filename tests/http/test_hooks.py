"""OpenClaw's webhooks, `POST /hooks/agent` and `POST /hooks/wake`: the hook token, the
payloads, the agent and session policy, waiting for the answer, and the wake turn."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import asyncpg
import pytest

from agents.runs import AgentRun
from agents.store_postgres import PostgresSessionStore
from gateway.appkeys import STATE
from gateway.config.apply import apply_config
from gateway.http import hooks_wire
from gateway.http.hooks import HOOK_HOLDS
from gateway.http.hooks_wire import HookReplays
from gateway.http.openai_wire import SHUTDOWN_ABORT
from gateway.state import AppOptions
from tests.support.configs import MakeConfig, merged
from tests.support.http_client import (
    AUTH,
    BASE_SETTINGS,
    HI,
    TOKEN,
    Client,
    MakeClient,
    fake_provider,
)
from tests.support.pgserver import PgServer
from tests.support.raw_http import exchange, request_bytes
from tests.support.shared_store import HeldOpenAI, forget_the_claim, renewals_of
from tests.support.statement_relay import StatementRelay
from tests.support.upstreams import FakeOpenAI, Status
from tests.support.ws_client import GatewayWs

HOOK_TOKEN = "hook-token-93bd"
HOOK_AUTH = {"Authorization": f"Bearer {HOOK_TOKEN}"}
HOOKS: dict[str, Any] = {"hooks": {"enabled": True, "token": HOOK_TOKEN}}
UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[47][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def with_hooks(**hooks: Any) -> dict[str, Any]:
    return {"hooks": {**HOOKS["hooks"], **hooks}}


def error(
    message: str,
    param: str | None = None,
    code: str | None = None,
    type_: str = "invalid_request_error",
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


async def hook(
    client: Client,
    path: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    response = await client.post(path, json=body, headers=HOOK_AUTH if headers is None else headers)
    return response.status, await response.json()


async def finished(client: Client, run_id: str) -> AgentRun:
    registry = client.app[STATE].registry
    assert registry is not None
    run = registry.run(run_id)
    assert run is not None
    await run.wait()
    return run


async def transcript(client: Client, key: str) -> list[tuple[str, str]]:
    registry = client.app[STATE].registry
    assert registry is not None
    found = await registry.history(key)
    return [(m.role, m.text) for m in found.messages]


@pytest.fixture
async def client(gateway: MakeClient) -> Client:
    return await gateway(HOOKS)


class TestHookToken:
    async def test_is_off_unless_enabled(self, gateway: MakeClient) -> None:
        client = await gateway()
        assert (await hook(client, "/hooks/agent", {"message": "hi"}))[0] == 404

    async def test_bearer(self, client: Client) -> None:
        assert (await hook(client, "/hooks/agent", {"message": "hi"}))[0] == 202

    async def test_the_x_openclaw_token_header(self, client: Client) -> None:
        headers = {"x-openclaw-token": HOOK_TOKEN}
        assert (await hook(client, "/hooks/agent", {"message": "hi"}, headers))[0] == 202

    async def test_the_configured_token_is_trimmed_as_presented_ones_are(
        self, gateway: MakeClient
    ) -> None:
        # A presented token is trimmed, so one configured with a trailing newline (pasted from
        # a file) would otherwise never match.
        client = await gateway(with_hooks(token=f" {HOOK_TOKEN}\n"))
        assert (await hook(client, "/hooks/agent", {"message": "hi"}))[0] == 202

    async def test_none_is_a_401(self, client: Client) -> None:
        assert await hook(client, "/hooks/agent", {"message": "hi"}, {}) == (
            401,
            error("Unauthorized", None, "invalid_api_key", "unauthorized"),
        )

    async def test_the_gateway_token_is_not_the_hook_token(self, client: Client) -> None:
        assert (await hook(client, "/hooks/agent", {"message": "hi"}, AUTH))[0] == 401

    async def test_the_hook_token_is_not_the_gateway_token(self, client: Client) -> None:
        response = await client.post("/v1/chat/completions", json=HI, headers=HOOK_AUTH)
        assert response.status == 401

    async def test_a_query_token_is_refused(self, client: Client) -> None:
        assert await hook(client, f"/hooks/agent?token={HOOK_TOKEN}", {"message": "hi"}) == (
            400,
            error(
                "Hook token must be provided via Authorization: Bearer <token> or"
                " X-OpenClaw-Token header (query parameters are not allowed)."
            ),
        )

    async def test_failures_lock_the_client_out_with_the_gateways_limiter(
        self, gateway: MakeClient
    ) -> None:
        client = await gateway(
            merged(
                HOOKS,
                {"gateway": {"auth": {"rateLimit": {"maxAttempts": 2, "exemptLoopback": False}}}},
            )
        )
        wrong = {"x-openclaw-token": "nope"}
        assert [(await hook(client, "/hooks/wake", {"text": "x"}, wrong))[0] for _ in "ab"] == [
            401,
            401,
        ]
        response = await client.post("/hooks/wake", json={"text": "x"}, headers=HOOK_AUTH)
        assert response.status == 429 and int(response.headers["Retry-After"]) > 0
        response = await client.post("/v1/chat/completions", json=HI, headers=AUTH)
        assert response.status == 429

    async def test_good_hook_calls_do_not_forgive_wrong_gateway_tokens(
        self, gateway: MakeClient
    ) -> None:
        # The hook token is the lesser secret, given to automation: holding it must not buy
        # unlimited guesses at the gateway's token.
        client = await gateway(
            merged(
                HOOKS,
                {"gateway": {"auth": {"rateLimit": {"maxAttempts": 3, "exemptLoopback": False}}}},
            )
        )
        wrong = {**AUTH, "Authorization": "Bearer guess"}
        statuses = []
        for _ in range(3):
            response = await client.post("/v1/chat/completions", json=HI, headers=wrong)
            statuses.append(response.status)
            statuses.append((await hook(client, "/hooks/agent", {"message": "hi"}))[0])
        assert statuses == [401, 202, 401, 202, 401, 429]
        response = await client.post("/v1/chat/completions", json=HI, headers=AUTH)
        assert response.status == 429


class TestRouting:
    async def test_only_post(self, client: Client) -> None:
        response = await client.get("/hooks/agent", headers=HOOK_AUTH)
        assert (response.status, response.headers["Allow"]) == (405, "POST")

    async def test_an_unknown_hook_is_a_404_after_auth(self, client: Client) -> None:
        assert (await hook(client, "/hooks/gmail", {}, {}))[0] == 401
        assert await hook(client, "/hooks/gmail", {}) == (
            404,
            error("Not Found", type_="not_found_error"),
        )

    @pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
    async def test_an_unknown_hook_is_a_404_after_auth_whatever_the_method(
        self, client: Client, method: str
    ) -> None:
        """It was a 405 `Allow: POST` before auth, where a POST is a 404: no method is."""
        response = await client.request(method, "/hooks/gmail")
        assert response.status == 401
        response = await client.request(method, "/hooks/gmail", headers=HOOK_AUTH)
        assert (response.status, await response.json()) == (
            404,
            error("Not Found", type_="not_found_error"),
        )
        assert "Allow" not in response.headers
        response = await client.request(method, "/hooks/wake", headers=HOOK_AUTH)
        assert (response.status, response.headers["Allow"]) == (405, "POST")

    async def test_the_path_is_configurable(self, gateway: MakeClient) -> None:
        client = await gateway(with_hooks(path="/in/"))
        assert (await hook(client, "/in/agent", {"message": "hi"}))[0] == 202
        assert (await hook(client, "/hooks/agent", {"message": "hi"}))[0] == 404

    async def test_a_path_that_only_begins_like_the_hooks_path_is_not_a_hook(
        self, client: Client
    ) -> None:
        response = await client.post("/hooksx/agent", json={"message": "hi"})  # no token
        assert response.status == 404

    async def test_a_body_over_max_body_bytes_is_a_413(self, gateway: MakeClient) -> None:
        client = await gateway(with_hooks(maxBodyBytes=64))
        status, body = await hook(client, "/hooks/agent", {"message": "x" * 100})
        assert (status, body) == (413, error("Payload too large"))

    async def test_a_body_that_is_not_json_is_a_400(self, client: Client) -> None:
        headers = {**HOOK_AUTH, "Content-Type": "application/json"}
        response = await client.post("/hooks/agent", data=b"{nope", headers=headers)
        assert response.status == 400
        assert (await response.json())["error"]["type"] == "invalid_request_error"

    @pytest.mark.parametrize(
        "content_type", [None, "text/plain", "application/x-www-form-urlencoded"]
    )
    async def test_a_body_not_sent_as_json_is_a_415(
        self, client: Client, content_type: str | None
    ) -> None:
        headers = (
            dict(HOOK_AUTH) if content_type is None else {**HOOK_AUTH, "Content-Type": content_type}
        )
        response = await client.post("/hooks/agent", data=b'{"message":"hi"}', headers=headers)
        assert (response.status, await response.json()) == (
            415,
            error(
                "Unsupported Content-Type; send application/json.", code="unsupported_media_type"
            ),
        )


class TestAgentHook:
    async def test_answers_202_with_the_run_and_its_new_session(self, client: Client) -> None:
        response = await client.post("/hooks/agent", json={"message": "hi"}, headers=HOOK_AUTH)
        body = await response.json()
        assert response.status == 202
        assert set(body) == {"ok", "runId", "sessionKey"} and body["ok"] is True
        assert re.fullmatch(UUID, body["runId"])
        assert re.fullmatch(f"agent:main:hook:{UUID}", body["sessionKey"])
        assert response.headers["x-openclaw-session-key"] == body["sessionKey"]

    async def test_the_run_is_a_turn_of_that_session(self, client: Client) -> None:
        _, body = await hook(client, "/hooks/agent", {"message": "check the inbox"})
        await finished(client, body["runId"])
        assert await transcript(client, body["sessionKey"]) == [
            ("user", "check the inbox"),
            ("assistant", "[turn 1] check the inbox"),
        ]

    async def test_each_call_gets_a_new_session(self, client: Client) -> None:
        keys = {(await hook(client, "/hooks/agent", {"message": "hi"}))[1]["sessionKey"]}
        keys.add((await hook(client, "/hooks/agent", {"message": "hi"}))[1]["sessionKey"])
        assert len(keys) == 2

    async def test_waiting_returns_the_final_text(self, client: Client) -> None:
        status, body = await hook(
            client, "/hooks/agent", {"message": "hello there", "waitForCompletion": True}
        )
        assert status == 200
        assert body["completion"] == {
            "status": "ok",
            "text": "[turn 1] hello there",
            "stopReason": "stop",
            "usage": {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6},
        }
        assert set(body) == {"ok", "runId", "sessionKey", "completion"}

    async def test_a_wait_longer_than_wait_timeout_seconds_is_a_504(
        self, gateway: MakeClient
    ) -> None:
        client = await gateway(
            merged(
                with_hooks(waitTimeoutSeconds=1),
                {"agents": {"list": [{"id": "main", "params": {"delayMs": 1500}}]}},
            )
        )
        status, body = await hook(
            client, "/hooks/agent", {"message": "one two", "waitForCompletion": True}
        )
        assert status == 504
        match = re.fullmatch(
            r"The run did not finish within 1 s \(hooks.waitTimeoutSeconds\);"
            f" it goes on as run ({UUID}).",
            body["error"]["message"],
        )
        assert match is not None
        assert body["error"]["code"] == "hook_wait_timeout"
        run = await finished(client, match[1])
        assert run.outcome is not None and run.outcome.status == "completed"

    async def test_timeout_seconds_bounds_the_run(self, gateway: MakeClient) -> None:
        client = await gateway(
            merged(HOOKS, {"agents": {"list": [{"id": "main", "params": {"delayMs": 3000}}]}})
        )
        status, body = await hook(
            client,
            "/hooks/agent",
            {"message": "one two", "waitForCompletion": True, "timeoutSeconds": 1},
        )
        assert (status, body["error"]["message"]) == (504, "upstream provider timeout")

    async def test_a_failed_run_answers_as_chat_completions_would(
        self, gateway: MakeClient, upstream: FakeOpenAI
    ) -> None:
        client = await gateway(merged(HOOKS, fake_provider(upstream)))
        upstream.script(Status(401))
        status, body = await hook(
            client, "/hooks/agent", {"message": "hi", "waitForCompletion": True}
        )
        assert (status, body["error"]["code"]) == (502, "upstream_auth_failed")

    async def test_agent_id_names_the_agent(self, gateway: MakeClient) -> None:
        client = await gateway(
            merged(HOOKS, {"agents": {"list": [{"id": "main"}, {"id": "beta"}]}})
        )
        _, body = await hook(client, "/hooks/agent", {"message": "hi", "agentId": "Beta"})
        assert body["sessionKey"].startswith("agent:beta:hook:")

    async def test_an_unknown_agent_is_a_400(self, client: Client) -> None:
        assert await hook(client, "/hooks/agent", {"message": "hi", "agentId": "nope"}) == (
            400,
            error("Unknown agent 'nope'.", "agentId"),
        )

    async def test_allowed_agent_ids_bounds_the_agents(self, gateway: MakeClient) -> None:
        client = await gateway(
            merged(
                with_hooks(allowedAgentIds=["beta"]),
                {"agents": {"list": [{"id": "main"}, {"id": "beta"}]}},
            )
        )
        assert await hook(client, "/hooks/agent", {"message": "hi"}) == (
            400,
            error("agentId is not allowed by hooks.allowedAgentIds", "agentId"),
        )
        assert (await hook(client, "/hooks/agent", {"message": "hi", "agentId": "beta"}))[0] == 202

    async def test_a_session_key_needs_allow_request_session_key(self, client: Client) -> None:
        assert await hook(client, "/hooks/agent", {"message": "hi", "sessionKey": "hook:a"}) == (
            400,
            error(
                "sessionKey is disabled for external /hooks/agent payloads;"
                " set hooks.allowRequestSessionKey=true to enable",
                "sessionKey",
            ),
        )

    async def test_a_session_key_continues_its_session(self, gateway: MakeClient) -> None:
        client = await gateway(with_hooks(allowRequestSessionKey=True))
        payload = {"message": "hi", "sessionKey": "Hook:Mail", "waitForCompletion": True}
        await hook(client, "/hooks/agent", payload)
        status, body = await hook(client, "/hooks/agent", payload)
        assert (status, body["sessionKey"]) == (200, "agent:main:hook:mail")
        assert body["completion"]["text"] == "[turn 2] hi"

    async def test_an_archived_session_takes_no_new_turn(self, gateway: MakeClient) -> None:
        client = await gateway(with_hooks(allowRequestSessionKey=True))
        payload = {"message": "hi", "sessionKey": "hook:shelved", "waitForCompletion": True}
        await hook(client, "/hooks/agent", payload)
        registry = client.app[STATE].registry
        assert registry is not None
        await registry.patch("agent:main:hook:shelved", archived=True)
        refused = (
            'Session "agent:main:hook:shelved" is archived. Restore it before starting new work.'
        )
        for call in (payload, {**payload, "idempotencyKey": "once"}):
            assert await hook(client, "/hooks/agent", call) == (
                400,
                error(refused, code="session_archived"),
            )
        assert await transcript(client, "agent:main:hook:shelved") == [
            ("user", "hi"),
            ("assistant", "[turn 1] hi"),
        ]

    async def test_the_default_session_key(self, gateway: MakeClient) -> None:
        client = await gateway(with_hooks(defaultSessionKey="hook:inbox"))
        _, body = await hook(client, "/hooks/agent", {"message": "hi"})
        assert body["sessionKey"] == "agent:main:hook:inbox"

    async def test_allowed_session_key_prefixes(self, gateway: MakeClient) -> None:
        client = await gateway(
            with_hooks(allowRequestSessionKey=True, allowedSessionKeyPrefixes=["hook:"])
        )
        assert await hook(client, "/hooks/agent", {"message": "hi", "sessionKey": "main"}) == (
            400,
            error("sessionKey must start with one of: hook:", "sessionKey"),
        )

    @pytest.mark.parametrize("given", ["hook:mail", "agent:main:hook:mail"])
    @pytest.mark.parametrize("prefix", ["hook:", "agent:main:", "Agent:Main:Hook:"])
    async def test_a_prefix_matches_the_key_with_or_without_its_agent(
        self, gateway: MakeClient, prefix: str, given: str
    ) -> None:
        # Without `hook:` among the prefixes the config needs a default key (OpenClaw's rule).
        default = {} if prefix == "hook:" else {"defaultSessionKey": "agent:main:hook:default"}
        settings = with_hooks(
            allowRequestSessionKey=True, allowedSessionKeyPrefixes=[prefix], **default
        )
        client = await gateway(settings)
        status, body = await hook(client, "/hooks/agent", {"message": "hi", "sessionKey": given})
        assert (status, body["sessionKey"]) == (202, "agent:main:hook:mail")

    async def test_a_default_key_the_config_allows_is_allowed(self, gateway: MakeClient) -> None:
        settings = with_hooks(
            defaultSessionKey="agent:main:hook:inbox", allowedSessionKeyPrefixes=["agent:main:"]
        )
        client = await gateway(settings)
        status, body = await hook(client, "/hooks/agent", {"message": "hi"})
        assert (status, body["sessionKey"]) == (202, "agent:main:hook:inbox")

    async def test_a_session_key_that_cannot_be_a_header_is_refused(
        self, gateway: MakeClient
    ) -> None:
        client = await gateway(with_hooks(allowRequestSessionKey=True))
        assert await hook(client, "/hooks/agent", {"message": "hi", "sessionKey": "a\nb"}) == (
            400,
            error("Invalid `sessionKey`.", "sessionKey"),
        )

    @pytest.mark.parametrize(
        ("payload", "expected"),
        [
            ({}, error("message required", "message")),
            ({"message": "  "}, error("message required", "message")),
            ({"message": 3}, error("message: Expected string, received number", "message")),
            (
                {"message": "hi", "waitForCompletion": "yes"},
                error("waitForCompletion must be boolean", "waitForCompletion"),
            ),
            (
                {"message": "hi", "model": "openai/gpt"},
                error(
                    "`model` is not supported by clawgate's hooks.",
                    "model",
                    "unsupported_parameter",
                ),
            ),
            (
                {"message": "hi", "timeoutSeconds": 0},
                error(
                    "timeoutSeconds must be a number of seconds from 1 to 31536000",
                    "timeoutSeconds",
                ),
            ),
            (
                {"message": "hi", "deliver": "yes"},
                error("deliver must be boolean", "deliver"),
            ),
            ({"message": "hi", "name": []}, error("name: Expected string, received array", "name")),
        ],
    )
    async def test_a_wrong_payload_is_a_400(
        self, client: Client, payload: dict[str, Any], expected: dict[str, Any]
    ) -> None:
        assert await hook(client, "/hooks/agent", payload) == (400, expected)

    async def test_openclaws_delivery_fields_are_accepted(self, client: Client) -> None:
        payload = {
            "message": "hi",
            "name": "Email",
            "wakeMode": "next-heartbeat",
            "deliver": True,
            "channel": "last",
            "to": "+15551234567",
        }
        assert (await hook(client, "/hooks/agent", payload))[0] == 202


class TestWakeHook:
    async def test_runs_a_turn_on_the_main_session(self, client: Client) -> None:
        status, body = await hook(client, "/hooks/wake", {"text": "New email received"})
        assert status == 200
        assert {k: body[k] for k in ("ok", "mode", "sessionKey")} == {
            "ok": True,
            "mode": "now",
            "sessionKey": "agent:main:main",
        }
        await finished(client, body["runId"])
        assert await transcript(client, "agent:main:main") == [
            ("user", "System: New email received"),
            ("assistant", "[turn 1] System: New email received"),
        ]

    async def test_an_archived_main_session_takes_no_wake_turn(self, client: Client) -> None:
        """As `/hooks/agent` and `chat.send` refuse it: the wake's turn ran on the archived
        session."""
        _, body = await hook(client, "/hooks/wake", {"text": "first"})
        await finished(client, body["runId"])
        registry = client.app[STATE].registry
        assert registry is not None
        await registry.patch("agent:main:main", archived=True)
        refused = 'Session "agent:main:main" is archived. Restore it before starting new work.'
        assert await hook(client, "/hooks/wake", {"text": "second"}) == (
            400,
            error(refused, code="session_archived"),
        )
        assert await transcript(client, "agent:main:main") == [
            ("user", "System: first"),
            ("assistant", "[turn 1] System: first"),
        ]

    @pytest.mark.parametrize(
        ("payload", "expected"),
        [
            ({}, error("text required", "text")),
            (
                {"text": "x", "mode": "next-heartbeat"},
                error(
                    'mode "next-heartbeat" is not supported: clawgate has no heartbeat; use "now".',
                    "mode",
                    "unsupported_parameter",
                ),
            ),
            ({"text": "x", "mode": "later"}, error('mode must be "now"', "mode")),
            (
                {"text": "x", "sessionKey": "hook:a"},
                error(
                    "`sessionKey` is not supported on /wake.", "sessionKey", "unsupported_parameter"
                ),
            ),
        ],
    )
    async def test_a_wrong_payload_is_a_400(
        self, client: Client, payload: dict[str, Any], expected: dict[str, Any]
    ) -> None:
        assert await hook(client, "/hooks/wake", payload) == (400, expected)


class TestReload:
    async def test_enabling_the_hooks_and_moving_them_apply_at_once(
        self, gateway: MakeClient, make_config: MakeConfig
    ) -> None:
        client = await gateway()
        assert (await hook(client, "/in/agent", {"message": "hi"}))[0] == 404
        settings = merged(BASE_SETTINGS, with_hooks(path="/in"))
        apply_config(client.app[STATE], make_config(json.dumps(settings)))
        assert (await hook(client, "/in/agent", {"message": "hi"}))[0] == 202


class TestIdempotency:
    async def test_a_retry_with_the_same_key_gets_the_first_run(self, client: Client) -> None:
        payload = {"message": "hi", "idempotencyKey": "delivery-1"}
        _, first = await hook(client, "/hooks/agent", payload)
        _, again = await hook(client, "/hooks/agent", payload)
        assert again == first
        await finished(client, first["runId"])
        assert len(await transcript(client, first["sessionKey"])) == 2  # one turn

    async def test_the_header_key(self, client: Client) -> None:
        headers = {**HOOK_AUTH, "Idempotency-Key": "delivery-2"}
        _, first = await hook(client, "/hooks/agent", {"message": "hi"}, headers)
        _, again = await hook(client, "/hooks/agent", {"message": "hi"}, headers)
        assert again["runId"] == first["runId"]

    async def test_a_waiting_retry_gets_the_first_runs_completion(self, client: Client) -> None:
        payload: dict[str, Any] = {"message": "hi", "idempotencyKey": "delivery-3"}
        _, first = await hook(client, "/hooks/agent", payload)
        status, again = await hook(client, "/hooks/agent", {**payload, "waitForCompletion": True})
        assert (status, again["runId"], again["completion"]["text"]) == (
            200,
            first["runId"],
            "[turn 1] hi",
        )

    async def test_a_waiting_retry_after_the_run_ended_gets_its_completion(
        self, gateway: MakeClient
    ) -> None:
        # The usual retry: the first call's caller gave up waiting (or lost its connection),
        # and the run ended before the retry came.
        client = await gateway(
            merged(HOOKS, {"agents": {"list": [{"id": "main", "params": {"delayMs": 200}}]}})
        )
        payload: dict[str, Any] = {"message": "hi", "idempotencyKey": "delivery-4"}
        _, first = await hook(client, "/hooks/agent", payload)
        await finished(client, first["runId"])
        status, again = await hook(client, "/hooks/agent", {**payload, "waitForCompletion": True})
        assert (status, again["runId"], again["completion"]["text"]) == (
            200,
            first["runId"],
            "[turn 1] hi",
        )

    async def test_a_waiting_retry_whose_run_was_forgotten_is_told_so_not_run_again(
        self, client: Client
    ) -> None:
        # The key still names the first call's run, but the registry no longer holds its
        # result: pushed out of the budget of ended runs (here a budget of nothing).
        registry = client.app[STATE].registry
        assert registry is not None
        registry.finished_runs_max_bytes = 0
        payload: dict[str, Any] = {"message": "hi", "idempotencyKey": "delivery-5"}
        _, first = await hook(client, "/hooks/agent", payload)
        await registry.wait_idle()
        response = await client.post(
            "/hooks/agent", json={**payload, "waitForCompletion": True}, headers=HOOK_AUTH
        )
        assert (response.status, await response.json()) == (
            410,
            error(
                f"Run {first['runId']} of this idempotency key has ended and its result is no"
                " longer kept; its reply is in the history of its session.",
                code="hook_result_unavailable",
            ),
        )
        assert response.headers["x-openclaw-session-key"] == first["sessionKey"]
        assert len(await transcript(client, first["sessionKey"])) == 2  # one turn
        _, again = await hook(client, "/hooks/agent", payload)  # not waiting: the 202
        assert again == first

    @pytest.mark.parametrize("header", ["Idempotency-Key", "x-openclaw-idempotency-key"])
    async def test_a_header_key_that_is_not_utf_8_is_refused(
        self, client: Client, header: str
    ) -> None:
        """Its bytes reach the handler as lone surrogates, which were repaired to U+FFFD:
        `k\\xff` and `k\\xfe` were one key, and the second call was answered with the first
        call's run (a 202 naming it), never run."""
        assert client.port is not None
        for key in (b"k\xff", b"k\xfe"):
            headers = {**HOOK_AUTH, "Content-Type": "application/json", header: key}
            request = request_bytes("POST", "/hooks/agent", headers, b'{"message": "hi"}')
            response = await exchange(client.port, request)
            assert (response.status, response.json()) == (
                400,
                error(f"invalid idempotency key (the {header} header is not UTF-8)"),
            )

    async def test_a_body_key_holding_a_lone_surrogate_is_refused(self, client: Client) -> None:
        """JSON spells one, UTF-8 cannot: repaired to U+FFFD, two such keys were one."""
        refused = error(
            "invalid idempotency key (a lone UTF-16 surrogate is not text)", "idempotencyKey"
        )
        for key in ("\\ud800", "\\udfff", "a\\ud83d"):
            raw = f'{{"message": "hi", "idempotencyKey": "{key}"}}'.encode()
            headers = {**HOOK_AUTH, "Content-Type": "application/json"}
            response = await client.post("/hooks/agent", data=raw, headers=headers)
            assert (response.status, await response.json()) == (400, refused)
        # A pair spells one character, a key like any other; so does an escaped U+FFFD.
        for key in ("\\ud83d\\ude00", "\\ufffd"):
            raw = f'{{"message": "hi", "idempotencyKey": "{key}"}}'.encode()
            response = await client.post("/hooks/agent", data=raw, headers=headers)
            assert response.status == 202, await response.text()

    async def test_another_message_under_the_same_key_is_another_run(self, client: Client) -> None:
        _, first = await hook(client, "/hooks/agent", {"message": "a", "idempotencyKey": "k"})
        _, other = await hook(client, "/hooks/agent", {"message": "b", "idempotencyKey": "k"})
        assert other["runId"] != first["runId"]

    @pytest.mark.parametrize("change", [{"name": "Other"}, {"timeoutSeconds": 7}])
    async def test_another_name_or_timeout_under_the_same_key_is_another_run(
        self, client: Client, change: dict[str, Any]
    ) -> None:
        payload = {"message": "a", "idempotencyKey": "k"}
        _, first = await hook(client, "/hooks/agent", payload)
        _, other = await hook(client, "/hooks/agent", {**payload, **change})
        assert other["runId"] != first["runId"]

    async def test_the_same_call_under_a_rotated_hook_token_is_another_run(
        self, client: Client, make_config: MakeConfig
    ) -> None:
        payload = {"message": "a", "idempotencyKey": "k"}
        _, first = await hook(client, "/hooks/agent", payload)
        rotated = {"hooks": {**HOOKS["hooks"], "token": "hook-token-rotated"}}
        apply_config(client.app[STATE], make_config(json.dumps(merged(BASE_SETTINGS, rotated))))
        headers = {"Authorization": "Bearer hook-token-rotated"}
        _, other = await hook(client, "/hooks/agent", payload, headers)
        assert other["runId"] != first["runId"]

    async def test_without_a_key_every_call_is_a_run(self, client: Client) -> None:
        _, first = await hook(client, "/hooks/agent", {"message": "hi"})
        _, other = await hook(client, "/hooks/agent", {"message": "hi"})
        assert other["runId"] != first["runId"]


class TestWaitingOverWebSocket:
    """The run id a hook answers with names the run for `agent.wait`, also once it ended."""

    async def ended_run_waited_for(self, client: Client, path: str, body: Any) -> Any:
        _, accepted = await hook(client, path, body)
        await finished(client, accepted["runId"])
        ws = GatewayWs(await client.ws_connect("/"))
        await ws.connect(auth={"token": TOKEN})
        payload = await ws.ok("agent.wait", {"runId": accepted["runId"], "timeoutMs": 30})
        await ws.ws.close()
        return accepted["runId"], payload["status"]

    async def test_an_agent_run_without_an_idempotency_key(self, client: Client) -> None:
        run_id, status = await self.ended_run_waited_for(client, "/hooks/agent", {"message": "hi"})
        assert status == "ok", run_id

    async def test_a_wake_run(self, client: Client) -> None:
        run_id, status = await self.ended_run_waited_for(client, "/hooks/wake", {"text": "ping"})
        assert status == "ok", run_id


class TestHookReplays:
    def test_forgets_a_call_after_ten_minutes(self) -> None:
        now = [0.0]
        replays = HookReplays(clock=lambda: now[0])
        replays.put("scope", "run-1", "agent:main:hook:x")
        now[0] = 599.0
        assert replays.get("scope") == ("run-1", "agent:main:hook:x")
        now[0] = 600.0
        assert replays.get("scope") is None

    def test_past_its_bound_the_oldest_call_is_forgotten(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(hooks_wire, "REPLAYS_MAX", 2)
        replays = HookReplays()
        for scope in ("a", "b", "a", "c"):  # "a" put again is the newer one
            replays.put(scope, f"run-{scope}", "agent:main:hook:x")
        assert [replays.get(scope) is not None for scope in "abc"] == [True, False, True]


@pytest.mark.postgres
class TestAClaimOnASharedStore:
    """The claim of a keyed call, in a PostgreSQL store that other processes share."""

    async def test_lost_while_the_database_was_away_is_claimed_again(
        self, gateway: MakeClient, pg_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Its lease ran out while its renewals failed (the database away longer than the
        lease), and the next claim of any process forgot it: it was never claimed again, so
        a retry on another process ran the call a second time."""
        held = HeldOpenAI()
        await held.start()
        settings = merged(
            HOOKS, {**fake_provider(held), "store": {"backend": "postgres", "url": pg_url}}
        )
        client = await gateway(settings, AppOptions(hook_claim_lease_seconds=0.6))
        store = client.app[STATE].store
        assert store is not None
        renewed = renewals_of(store, monkeypatch)
        other = PostgresSessionStore(pg_url)
        await other.open()
        conn = await asyncpg.connect(pg_url)
        try:
            headers = {**HOOK_AUTH, "Idempotency-Key": "lost-1"}
            status, first = await hook(client, "/hooks/agent", {"message": "hi"}, headers)
            assert status == 202, first
            await held.wait_for_requests(1, within=15)
            [(scope, run_id)] = await conn.fetch("SELECT scope, run_id FROM hook_calls")
            assert run_id == first["runId"]
            await forget_the_claim(conn)
            renewed.clear()
            async with asyncio.timeout(10):
                while len(renewed) < 2:  # a renewal begun after the loss has ended
                    await asyncio.sleep(0.02)
            # A retry on another process gets the first call's run.
            again = await other.claim_hook_call(scope, "retry", first["sessionKey"], 60_000)
            assert again == (first["runId"], first["sessionKey"])
            held.go.set()
            await finished(client, first["runId"])
            async with asyncio.timeout(10):  # its end keeps it for the replay window
                while await other.call_going_on(scope) is not None:
                    await asyncio.sleep(0.02)
            assert await other.call_answer(scope) is None
            again = await other.claim_hook_call(scope, "retry", first["sessionKey"], 60_000)
            assert again == (first["runId"], first["sessionKey"])
        finally:
            held.go.set()
            await conn.close()
            await other.aclose()
            await held.aclose()

    async def test_lost_and_its_run_ended_before_a_renewal_is_kept_for_the_replay_window(
        self, gateway: MakeClient, pg_url: str
    ) -> None:
        """The run's end marked a claim that was no longer there: a retry on another process
        right after the answer found none and ran the call a second time."""
        held = HeldOpenAI()
        await held.start()
        settings = merged(
            HOOKS, {**fake_provider(held), "store": {"backend": "postgres", "url": pg_url}}
        )
        client = await gateway(settings, AppOptions(hook_claim_lease_seconds=600))
        other = PostgresSessionStore(pg_url)
        await other.open()
        conn = await asyncpg.connect(pg_url)
        try:
            headers = {**HOOK_AUTH, "Idempotency-Key": "lost-2"}
            body = {"message": "hi", "waitForCompletion": True}
            answer = asyncio.create_task(hook(client, "/hooks/agent", body, headers))
            await held.wait_for_requests(1, within=15)
            await forget_the_claim(conn)
            held.go.set()
            status, first = await answer
            assert status == 200, first
            [(scope, ended)] = await conn.fetch("SELECT scope, ended FROM hook_calls")
            assert ended
            again = await other.claim_hook_call(scope, "retry", first["sessionKey"], 60_000)
            assert again == (first["runId"], first["sessionKey"])
        finally:
            held.go.set()
            await conn.close()
            await other.aclose()
            await held.aclose()

    async def test_made_again_never_outlives_a_release_that_came_meanwhile(
        self, gateway: MakeClient, pg_url: str, pg_server: PgServer
    ) -> None:
        """A renewal finds the claim gone while the drain gives up on the run: the release
        waits for the renewal, so the claim it makes again is released, never left behind
        (a retry on another process would be told for its lease that a run goes on)."""
        held = HeldOpenAI()
        await held.start()
        relay = StatementRelay("127.0.0.1", pg_server.port, b"UPDATE hook_calls SET expires_at")
        settings = merged(
            HOOKS,
            {**fake_provider(held), "store": {"backend": "postgres", "url": relay.url(pg_url)}},
        )
        client = await gateway(settings, AppOptions(hook_claim_lease_seconds=0.6))
        conn = await asyncpg.connect(pg_url)
        try:
            headers = {**HOOK_AUTH, "Idempotency-Key": "lost-3"}
            status, first = await hook(client, "/hooks/agent", {"message": "hi"}, headers)
            assert status == 202, first
            await held.wait_for_requests(1, within=15)
            await relay.wait_held()  # the first renewal: sent, not yet at the database
            await forget_the_claim(conn)
            registry = client.app[STATE].registry
            assert registry is not None
            run = registry.run(first["runId"])
            assert run is not None
            run.abort(SHUTDOWN_ABORT)
            holds = client.app[HOOK_HOLDS]
            async with asyncio.timeout(10):
                while len(holds) < 2:  # the claim's end has begun beside its renewal
                    await asyncio.sleep(0.01)
            relay.release()
            await asyncio.wait_for(run.wait(), 10)
            async with asyncio.timeout(10):
                while holds:
                    await asyncio.sleep(0.01)
            assert await conn.fetchval("SELECT count(*) FROM hook_calls") == 0
        finally:
            held.go.set()
            relay.close()
            await conn.close()
            await held.aclose()
