"""The headers of the answers every endpoint shares, beyond the common ones (§9): what RFC
9110 asks of a status, and what keeps an error out of a cache."""

from __future__ import annotations

import pytest

from tests.support.http_client import CHAT, Client, MakeClient
from tests.support.raw_http import exchange, request_bytes

SETTINGS = {
    "gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}},
    "hooks": {"enabled": True, "token": "hook-secret-1"},
}
JSON = {"Content-Type": "application/json"}

# Every endpoint that asks for a credential: (method, path).
GUARDED = [
    ("POST", CHAT),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/openclaw"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/responses"),
    ("GET", "/v1/responses/resp_x"),
    ("POST", "/hooks/wake"),
    ("POST", "/hooks/agent"),
    ("GET", "/metrics"),
]


@pytest.fixture
async def every_endpoint(gateway: MakeClient) -> Client:
    return await gateway(SETTINGS)


class TestUnauthorized:
    @pytest.mark.parametrize(("method", "path"), GUARDED)
    @pytest.mark.parametrize("credential", [None, "Bearer wrong-token-1"], ids=["none", "wrong"])
    async def test_a_401_names_the_scheme_to_authenticate_with(
        self, every_endpoint: Client, method: str, path: str, credential: str | None
    ) -> None:
        """RFC 9110 §15.5.2: a 401 carries WWW-Authenticate, the challenge a client answers
        (RFC 6750 §3: the bearer token the gateway and the hooks take)."""
        headers = JSON if credential is None else {**JSON, "Authorization": credential}
        body = b"{}" if method == "POST" else b""
        response = await exchange(every_endpoint.port, request_bytes(method, path, headers, body))
        assert response.status == 401, response
        assert response.headers.get("www-authenticate") == "Bearer", response.headers
        assert response.json()["error"]["code"] == "invalid_api_key"
