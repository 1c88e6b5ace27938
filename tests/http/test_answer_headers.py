"""The headers of the answers every endpoint shares, beyond the common ones (§9): what RFC
9110 asks of a status, and what keeps an error out of a cache."""

from __future__ import annotations

import pytest

from tests.support.http_client import AUTH, CHAT, Client, MakeClient
from tests.support.raw_http import exchange, request_bytes, request_head

SETTINGS = {
    "gateway": {"http": {"endpoints": {"responses": {"enabled": True}}}},
    "hooks": {"enabled": True, "token": "hook-secret-1"},
}
JSON = {"Content-Type": "application/json"}
AUTH_TEXT = {**AUTH, "Content-Type": "text/plain"}
LARGE = 30 * 2**20  # over every body limit

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


# Errors of each kind a client meets, each from the head or body alone: (request, status).
ERRORS = [
    pytest.param(request_bytes("GET", "/no/such/path"), 404, id="unknown-path"),
    pytest.param(request_bytes("GET", "/v1/other"), 404, id="unknown-v1-path"),
    pytest.param(request_bytes("GET", CHAT), 405, id="method"),
    pytest.param(request_bytes("PUT", "/healthz"), 405, id="probe-method"),
    pytest.param(request_bytes("GET", "/v1/models"), 401, id="credential"),
    pytest.param(request_bytes("POST", CHAT, AUTH_TEXT, b"{}"), 415, id="content-type"),
    pytest.param(request_bytes("POST", CHAT, AUTH, b"{not json"), 400, id="invalid-json"),
    pytest.param(
        request_head("POST", CHAT, {**AUTH, "Content-Length": str(LARGE)}), 413, id="too-large"
    ),
    pytest.param(
        request_bytes("GET", "/v1/models/nope", {"Authorization": AUTH["Authorization"]}),
        404,
        id="unknown-model",
    ),
    pytest.param(
        b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        421,
        id="host",
    ),
    pytest.param(
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-\x01Bad: y\r\n\r\n",
        400,
        id="parser-refusal",
    ),
    pytest.param(
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Long: " + b"y" * 9000 + b"\r\n\r\n",
        431,
        id="oversize-field",
    ),
    pytest.param(b"GET /healthz HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n", 400, id="http-2-0"),
]


class TestErrorsAreNotStored:
    @pytest.mark.parametrize(("request_", "status"), ERRORS)
    async def test_an_error_answer_says_no_store(
        self, every_endpoint: Client, request_: bytes, status: int
    ) -> None:
        """A 404 or 405 is cacheable by default (RFC 9111 §4.2.2, RFC 9110 §15.1): a cache
        between client and gateway would go on answering a path that a reload enabled, or a
        model an added agent made, with the old error. Every error says `no-store`, as the
        probes' answers do (§11)."""
        response = await exchange(every_endpoint.port, request_)
        assert response.status == status, response
        assert response.headers.get("cache-control") == "no-store", response.headers
        assert response.headers["content-type"] == "application/json; charset=utf-8"
