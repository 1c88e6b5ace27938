"""`GET /metrics`: auth, `gateway.metrics.enabled`/`public`, methods, bounded labels, one
registry per app."""

from __future__ import annotations

import json

import pytest

from agents.errors import (
    MalformedStream,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamStatusError,
    UpstreamTimeout,
)
from gateway.appkeys import METRICS, STATE
from gateway.metrics import upstream_kind
from tests.support.metrics import (
    AUTH,
    CONTENT_TYPE,
    MakeGateway,
    MetricsGateway,
    parse,
    until,
)
from tests.support.raw_http import raw_exchange, request_head

# A WebSocket upgrade request as a client sends it (RFC 6455 §4.1).
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}
UNAUTHORIZED = {
    "error": {
        "message": "Unauthorized",
        "type": "unauthorized",
        "param": None,
        "code": "invalid_api_key",
    }
}


class TestAuth:
    async def test_without_a_token_is_a_401_in_the_error_shape(
        self, gateway: MetricsGateway
    ) -> None:
        response = await gateway.client.get("/metrics")
        assert response.status == 401
        assert await response.json() == UNAUTHORIZED

    async def test_a_wrong_token_is_a_401_and_counts_as_a_failed_attempt(
        self, gateway: MetricsGateway
    ) -> None:
        response = await gateway.client.get("/metrics", headers={"Authorization": "Bearer x"})
        assert response.status == 401
        samples = await gateway.scrape()
        assert samples["clawgate_auth_failures_total"] == {("mismatch",): 1}

    async def test_the_gateway_token_gets_the_text_format(self, gateway: MetricsGateway) -> None:
        response = await gateway.client.get("/metrics", headers=AUTH)
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE
        assert response.headers["Cache-Control"] == "no-store"
        assert "# TYPE clawgate_runs_total counter" in await response.text()

    async def test_repeated_wrong_tokens_lock_the_client_out_and_say_why(
        self, make_gateway: MakeGateway
    ) -> None:
        gateway = await make_gateway(
            {"gateway": {"auth": {"rateLimit": {"maxAttempts": 2, "lockoutMs": 60_000}}}}
        )
        wrong = {"Authorization": "Bearer wrong"}
        statuses = [(await gateway.client.get("/metrics", headers=wrong)).status for _ in range(3)]
        assert statuses == [401, 401, 429]
        # Locked out, the right token is refused too; the registry shows all four.
        assert (await gateway.client.get("/metrics", headers=AUTH)).status == 429
        registry = gateway.app[METRICS].registry
        failures = {
            reason: registry.get_sample_value("clawgate_auth_failures_total", {"reason": reason})
            for reason in ("mismatch", "locked_out")
        }
        assert failures == {"mismatch": 2, "locked_out": 2}

    async def test_a_readiness_probe_without_a_credential_is_no_failed_authentication(
        self, make_gateway: MakeGateway
    ) -> None:
        # A load balancer's probe, from another host, while the gateway drains: the details
        # are for a credential, and none was offered.
        gateway = await make_gateway({"gateway": {"trustedProxies": ["127.0.0.1"]}})
        gateway.app[STATE].draining = True
        balancer = {"X-Forwarded-For": "203.0.113.9"}
        for _ in range(3):
            response = await gateway.client.get("/readyz", headers=balancer)
            assert (response.status, await response.read()) == (503, b'{"ready":false}')
        registry = gateway.app[METRICS].registry
        assert (
            registry.get_sample_value("clawgate_auth_failures_total", {"reason": "missing"}) is None
        )

    async def test_a_foreign_host_is_refused_before_auth(self, make_gateway: MakeGateway) -> None:
        gateway = await make_gateway({"gateway": {"metrics": {"public": True}}})
        response = await gateway.client.get("/metrics", headers={"Host": "evil.example"})
        assert response.status == 421
        assert (await response.json())["error"]["code"] == "host_not_allowed"

    async def test_public_metrics_need_no_token(self, make_gateway: MakeGateway) -> None:
        gateway = await make_gateway({"gateway": {"metrics": {"public": True}}})
        response = await gateway.client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE


class TestSettings:
    async def test_disabled_metrics_are_a_404(self, make_gateway: MakeGateway) -> None:
        gateway = await make_gateway({"gateway": {"metrics": {"enabled": False}}})
        response = await gateway.client.get("/metrics", headers=AUTH)
        assert response.status == 404
        assert (await response.json())["error"]["type"] == "not_found_error"

    async def test_a_reload_turns_them_off_at_once(self, gateway: MetricsGateway) -> None:
        settings = {**gateway.settings}
        settings["gateway"] = {**settings["gateway"], "metrics": {"enabled": False}}
        gateway.rewrite(json.dumps(settings))
        state = gateway.app[STATE]
        await until(lambda: not state.config.gateway.metrics.enabled)
        assert (await gateway.client.get("/metrics", headers=AUTH)).status == 404

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
    async def test_other_methods_are_a_405(self, gateway: MetricsGateway, method: str) -> None:
        response = await gateway.client.request(method, "/metrics", headers=AUTH)
        assert response.status == 405
        assert response.headers["Allow"] == "GET, HEAD"

    async def test_head_answers_without_a_body(self, gateway: MetricsGateway) -> None:
        response = await gateway.client.head("/metrics", headers=AUTH)
        assert response.status == 200
        assert await response.read() == b""


class TestLabels:
    async def test_paths_are_labelled_by_their_route_never_by_what_the_client_sent(
        self, gateway: MetricsGateway
    ) -> None:
        client = gateway.client
        for path in ("/v1/models/openclaw", "/v1/models/a%2Fb", "/x-123", "/y-456", "/v1/zz"):
            await client.get(path, headers=AUTH)
        samples = await gateway.scrape()
        assert samples["clawgate_http_requests_total"] == {
            ("/v1/models/{model_id}", "200"): 1,
            ("/v1/models/{model_id}", "404"): 1,
            ("unmatched", "404"): 2,
            ("/v1/{tail}", "404"): 1,
        }

    async def test_a_path_with_a_double_slash_is_labelled_by_the_route_that_answered_it(
        self, gateway: MetricsGateway
    ) -> None:
        # Open WebUI with a base URL ending in `/` sends every request so.
        port = gateway.client.port
        for path in ("//v1/models", "/v1//models", "//v1/models/openclaw", "//nothing"):
            await raw_exchange(port, request_head("GET", path, AUTH))
        samples = await gateway.scrape()
        assert samples["clawgate_http_requests_total"] == {
            ("/v1/models", "200"): 2,
            ("/v1/models/{model_id}", "200"): 1,
            ("unmatched", "404"): 1,
        }

    async def test_hook_paths_are_one_label(self, make_gateway: MakeGateway) -> None:
        gateway = await make_gateway({"hooks": {"enabled": True, "token": "hook-secret-1"}})
        for path in ("/hooks/agent", "/hooks/wake", "/hooks/whatever-9"):
            await gateway.client.post(path, json={})
        samples = await gateway.scrape()
        routes = {route for route, _ in samples["clawgate_http_requests_total"]}
        assert routes == {"hooks"}

    async def test_a_refused_websocket_upgrade_is_labelled_websocket_whatever_its_path(
        self, gateway: MetricsGateway
    ) -> None:
        client = gateway.client
        foreign = {**UPGRADE, "Origin": "https://evil.example"}
        assert (await client.get("/", headers=foreign)).status == 403
        assert (await client.get("/x-123", headers=foreign)).status == 403
        bad_version = {**UPGRADE, "Sec-WebSocket-Version": "99"}
        assert (await client.get("/v1/models", headers=bad_version)).status == 400
        samples = await gateway.scrape()
        assert samples["clawgate_http_requests_total"] == {
            ("websocket", "403"): 2,
            ("websocket", "400"): 1,
        }

    @pytest.mark.parametrize(
        ("error", "kind"),
        [
            (UpstreamTimeout(), "timeout"),
            (UpstreamRateLimited(3), "rate_limited"),
            (UpstreamAuthFailed(401), "auth"),
            (UpstreamStatusError(404), "client_error"),
            (UpstreamStatusError(503), "server_error"),
            (MalformedStream(), "malformed"),
            (UpstreamError("ConnectionRefusedError: ..."), "connection"),
        ],
    )
    def test_upstream_errors_have_a_fixed_set_of_kinds(
        self, error: UpstreamError, kind: str
    ) -> None:
        assert upstream_kind(error) == kind


class TestRegistries:
    async def test_two_apps_in_one_process_count_apart(self, make_gateway: MakeGateway) -> None:
        first, second = await make_gateway(), await make_gateway()
        await first.client.get("/healthz")
        await first.client.get("/healthz")
        await second.client.get("/healthz")
        assert (await first.scrape())["clawgate_http_requests_total"] == {("/healthz", "200"): 2}
        assert (await second.scrape())["clawgate_http_requests_total"] == {("/healthz", "200"): 1}

    async def test_a_scrape_parses_without_duplicate_series(self, gateway: MetricsGateway) -> None:
        response = await gateway.client.get("/metrics", headers=AUTH)
        parse(await response.text())  # asserts each (name, labels) once
