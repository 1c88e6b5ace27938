"""Attacks from a web page the user visits, and from behind a proxy, on a gateway listening on
loopback (README "Browsers and proxies"). Each is sent over real sockets to a served gateway:

- cross-site WebSocket hijacking: a page of https://evil.example opens ws://127.0.0.1:port;
- guessing the secret from a page, which the loopback exemption used to let run at full speed;
- DNS rebinding: the page's own name resolves to 127.0.0.1, its requests carry its Host;
- CSRF: a "simple" form post, which needs no preflight, to /v1/chat/completions;
- X-Forwarded-For, believed only from a trusted proxy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.auth import AuthRateLimiter
from gateway.reload import reload_from_file
from gateway.ws.handler import WS
from tests.support.configs import merged
from tests.support.raw_http import RawResponse, exchange_upgrade
from tests.support.served import (
    AUTH,
    CHAT,
    SETTINGS,
    TOKEN,
    Served,
    build_app,
    production_logging,
    served,
)
from tests.support.spec_checks import assert_error_body

EVIL = "https://evil.example"
ERROR_JSON = "application/json; charset=utf-8"


def error(message: str, code: str | None, type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


HOST_REFUSED = error(
    "Host not allowed; list this host name in gateway.http.allowedHosts.", "host_not_allowed"
)
ORIGIN_REFUSED = error(
    "Origin not allowed; list it in gateway.controlUi.allowedOrigins.", "origin_not_allowed"
)
PREAUTH_FULL = error(
    "Too many unauthenticated WebSocket connections; try again later.", None, "api_error"
)
UNAUTHORIZED = error("Unauthorized", "invalid_api_key", "unauthorized")


def raw_request(
    method: str,
    path: str,
    headers: Sequence[tuple[str, str | bytes]],
    body: bytes = b"",
    version: str = "HTTP/1.1",
) -> bytes:
    """A request with exactly these headers (no Host unless given), `Connection: close`."""
    lines = [f"{method} {path} {version}".encode(), b"Connection: close"]
    for name, value in headers:
        lines.append(
            name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
        )
    if body or method == "POST":
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def upgrade_headers(host: str, *extra: tuple[str, str | bytes]) -> list[tuple[str, str | bytes]]:
    key = base64.b64encode(os.urandom(16)).decode()
    return [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
        *extra,
    ]


async def send(port: int, request: bytes) -> RawResponse:
    """One exchange; a 101 is returned at its head (the socket is then closed)."""
    return await exchange_upgrade(port, request, within=10)


async def upgrade(port: int, host: str, *extra: tuple[str, str | bytes]) -> RawResponse:
    return await send(port, raw_request("GET", "/", upgrade_headers(host, *extra)))


def connect_frame(token: str | None = TOKEN, **auth: str) -> dict[str, Any]:
    return {
        "type": "req",
        "id": "c1",
        "method": "connect",
        "params": {
            "minProtocol": 3,
            "maxProtocol": 4,
            "client": {"id": "test", "version": "1", "platform": "linux", "mode": "backend"},
            "role": "operator",
            "auth": {"token": token, **auth} if token is not None else dict(auth),
        },
    }


async def ws_connect(
    session: aiohttp.ClientSession, url: str, frame: Mapping[str, Any], **headers: str
) -> tuple[dict[str, Any], aiohttp.ClientWebSocketResponse]:
    """Open the WebSocket, answer the challenge with `frame`; the response and the socket."""
    ws = await session.ws_connect(url, headers=headers)
    challenge = await ws.receive_json(timeout=5)
    assert challenge["event"] == "connect.challenge"
    await ws.send_json(frame)
    return await ws.receive_json(timeout=5), ws


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path, settings: Mapping[str, Any] | None = None
) -> AsyncIterator[Served]:
    with production_logging():
        async with served(build_app(tmp_path, settings)) as server:
            yield server


class TestCrossSiteWebSocket:
    async def test_an_upgrade_from_another_site_is_refused_with_403(self, tmp_path: Path) -> None:
        async with gateway(tmp_path) as server:
            host = f"127.0.0.1:{server.port}"
            response = await upgrade(server.port, host, ("Origin", EVIL))
        assert (response.status, response.json()) == (403, ORIGIN_REFUSED)
        assert_error_body(response)

    async def test_in_auth_mode_none_a_page_gets_no_socket(self, tmp_path: Path) -> None:
        # Before: admin with every scope and no credential at all.
        async with gateway(tmp_path, {"gateway": {"auth": {"mode": "none"}}}) as server:
            response = await upgrade(server.port, f"localhost:{server.port}", ("Origin", EVIL))
        assert (response.status, response.json()) == (403, ORIGIN_REFUSED)

    @pytest.mark.parametrize(
        "origin",
        [
            "null",
            "http://127.0.0.1",
            "https://127.0.0.1:{port}",
            "garbage",
            "http://evil.example:{port}",
        ],
    )
    async def test_origins_other_than_the_gateways_own_are_refused(
        self, tmp_path: Path, origin: str
    ) -> None:
        async with gateway(tmp_path) as server:
            given = origin.format(port=server.port)
            response = await upgrade(server.port, f"127.0.0.1:{server.port}", ("Origin", given))
        assert response.status == 403

    @pytest.mark.parametrize("host", ["127.0.0.1:{port}", "LOCALHOST:{port}"])
    async def test_the_gateways_own_origin_is_served(self, tmp_path: Path, host: str) -> None:
        async with gateway(tmp_path) as server:
            own = host.format(port=server.port)
            response = await upgrade(server.port, own, ("Origin", f"http://{own.lower()}"))
        assert response.status == 101

    async def test_a_client_without_origin_is_a_tool_and_served(self, tmp_path: Path) -> None:
        async with gateway(tmp_path) as server:
            response = await upgrade(server.port, f"127.0.0.1:{server.port}")
        assert response.status == 101

    async def test_an_origin_in_allowed_origins_connects(self, tmp_path: Path) -> None:
        settings = {"gateway": {"controlUi": {"allowedOrigins": ["https://UI.example:8443"]}}}
        async with gateway(tmp_path, settings) as server, aiohttp.ClientSession() as session:
            answer, ws = await ws_connect(
                session, server.url, connect_frame(), Origin="https://ui.example:8443"
            )
            await ws.close()
        assert answer["ok"] is True, answer

    async def test_allowed_origins_apply_on_reload(self, tmp_path: Path) -> None:
        async with gateway(tmp_path) as server:
            host = f"127.0.0.1:{server.port}"
            assert (await upgrade(server.port, host, ("Origin", EVIL))).status == 403
            config = merged(SETTINGS, {"gateway": {"controlUi": {"allowedOrigins": [EVIL]}}})
            (tmp_path / "clawgate.json5").write_text(json.dumps(config))
            result = await reload_from_file(server.state)
            assert result is not None and "gateway.controlUi.allowedOrigins" in result.changed
            assert (await upgrade(server.port, host, ("Origin", EVIL))).status == 101


class TestGuessingFromAPage:
    async def test_loopback_is_not_exempt_by_default_over_websocket(self, tmp_path: Path) -> None:
        settings = {"gateway": {"auth": {"rateLimit": {"maxAttempts": 3}}}}
        async with gateway(tmp_path, settings) as server, aiohttp.ClientSession() as session:
            for _ in range(3):
                answer, ws = await ws_connect(session, server.url, connect_frame("guess"))
                await ws.close()
                assert answer["error"]["details"]["code"] == "AUTH_TOKEN_MISMATCH"
            answer, ws = await ws_connect(session, server.url, connect_frame())
            await ws.close()
        assert answer["error"]["details"]["code"] == "AUTH_RATE_LIMITED"

    async def test_a_page_is_limited_even_where_loopback_is_exempt(self, tmp_path: Path) -> None:
        # The page's origin was allowed (say, a UI the user trusts that got compromised).
        settings = {
            "gateway": {
                "auth": {"rateLimit": {"maxAttempts": 3, "exemptLoopback": True}},
                "controlUi": {"allowedOrigins": [EVIL]},
            }
        }
        async with gateway(tmp_path, settings) as server, aiohttp.ClientSession() as session:
            for _ in range(3):
                answer, ws = await ws_connect(
                    session, server.url, connect_frame("guess"), Origin=EVIL
                )
                await ws.close()
            answer, ws = await ws_connect(session, server.url, connect_frame(), Origin=EVIL)
            await ws.close()
            assert answer["error"]["details"]["code"] == "AUTH_RATE_LIMITED"
            # A local tool, without an Origin, keeps its exemption.
            answer, ws = await ws_connect(session, server.url, connect_frame())
            await ws.close()
            assert answer["ok"] is True, answer


class TestDnsRebinding:
    @pytest.mark.parametrize(
        "request_head",
        [
            ("GET", "/v1/models", []),
            ("GET", "/healthz", []),
            ("GET", "/readyz", []),
            ("POST", CHAT, [("Content-Type", "application/json")]),
        ],
        ids=["models", "healthz", "readyz", "chat"],
    )
    async def test_a_foreign_host_is_refused_with_421_on_every_path(
        self, tmp_path: Path, request_head: tuple[str, str, list[tuple[str, str]]]
    ) -> None:
        method, path, extra = request_head
        headers = [("Host", f"evil.example:{0}"), ("Authorization", AUTH["Authorization"]), *extra]
        async with gateway(tmp_path) as server:
            response = await send(server.port, raw_request(method, path, headers, b"{}"))
        assert (response.status, response.json()) == (421, HOST_REFUSED)
        assert_error_body(response)

    async def test_a_foreign_host_is_refused_before_the_websocket_upgrade(
        self, tmp_path: Path
    ) -> None:
        async with gateway(tmp_path) as server:
            response = await upgrade(server.port, f"evil.example:{server.port}")
        assert (response.status, response.json()) == (421, HOST_REFUSED)

    @pytest.mark.parametrize(
        "host", ["127.0.0.1", "127.0.0.1:1", "localhost:80", "LocalHost.", "[::1]:18789", "[::1]"]
    )
    async def test_loopback_names_pass_with_any_port(self, tmp_path: Path, host: str) -> None:
        async with gateway(tmp_path) as server:
            response = await send(server.port, raw_request("GET", "/healthz", [("Host", host)]))
        assert response.status == 200

    @pytest.mark.parametrize(
        "host", ["gw.example", "GW.example:443", "gw.example:18789", "10.0.0.5:1"]
    )
    async def test_allowed_hosts_pass_whatever_the_port(self, tmp_path: Path, host: str) -> None:
        settings = {"gateway": {"http": {"allowedHosts": ["gw.example", "10.0.0.5"]}}}
        async with gateway(tmp_path, settings) as server:
            response = await send(server.port, raw_request("GET", "/healthz", [("Host", host)]))
        assert response.status == 200

    async def test_a_custom_bind_answers_to_its_own_address(self, tmp_path: Path) -> None:
        settings = {"gateway": {"bind": "custom", "customBindHost": "10.9.8.7"}}
        async with gateway(tmp_path, settings) as server:
            own = await send(server.port, raw_request("GET", "/healthz", [("Host", "10.9.8.7:1")]))
            other = await send(server.port, raw_request("GET", "/healthz", [("Host", "10.9.8.6")]))
        assert (own.status, other.status) == (200, 421)

    async def test_a_lan_bind_answers_to_the_machines_host_name(self, tmp_path: Path) -> None:
        async with gateway(tmp_path, {"gateway": {"bind": "lan"}}) as server:
            name = socket.gethostname()
            own = await send(server.port, raw_request("GET", "/healthz", [("Host", name)]))
            other = await send(
                server.port, raw_request("GET", "/healthz", [("Host", "evil.example")])
            )
        assert (own.status, other.status) == (200, 421)

    async def test_a_request_without_host_is_served(self, tmp_path: Path) -> None:
        # HTTP/1.0 without Host: no browser sends one, so no page can be behind it.
        async with gateway(tmp_path) as server:
            response = await send(
                server.port, raw_request("GET", "/healthz", [], version="HTTP/1.0")
            )
        assert response.status == 200

    async def test_allowed_hosts_apply_on_reload(self, tmp_path: Path) -> None:
        async with gateway(tmp_path) as server:
            request = raw_request("GET", "/healthz", [("Host", "gw.example")])
            assert (await send(server.port, request)).status == 421
            config = merged(SETTINGS, {"gateway": {"http": {"allowedHosts": ["gw.example"]}}})
            (tmp_path / "clawgate.json5").write_text(json.dumps(config))
            assert await reload_from_file(server.state) is not None
            assert (await send(server.port, request)).status == 200


class TestCrossSiteFormPost:
    @pytest.mark.parametrize("path", [CHAT, "/v1/embeddings"])
    @pytest.mark.parametrize(
        "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
    )
    async def test_a_simple_form_post_gets_415_even_without_auth(
        self, tmp_path: Path, content_type: str, path: str
    ) -> None:
        body = json.dumps({"model": "openclaw", "messages": [{"role": "user", "content": "x"}]})
        headers = [("Host", "127.0.0.1"), ("Content-Type", content_type), ("Origin", EVIL)]
        async with gateway(tmp_path, {"gateway": {"auth": {"mode": "none"}}}) as server:
            response = await send(server.port, raw_request("POST", path, headers, body.encode()))
        expected = error(
            "Unsupported Content-Type; send application/json.", "unsupported_media_type"
        )
        assert (response.status, response.json()) == (415, expected)
        assert_error_body(response)


def forwarded(client: str, *, auth: str = "Bearer wrong") -> list[tuple[str, str]]:
    return [("Host", "127.0.0.1"), ("Authorization", auth), ("X-Forwarded-For", client)]


async def failures_then(server: Served, client: str, then: str, count: int = 3) -> RawResponse:
    """`count` wrong tokens as `client`, then the right token as `then`."""
    for _ in range(count):
        response = await send(server.port, raw_request("GET", "/v1/models", forwarded(client)))
        assert (response.status, response.json()) == (401, UNAUTHORIZED)
    right = forwarded(then, auth=AUTH["Authorization"])
    return await send(server.port, raw_request("GET", "/v1/models", right))


LIMIT = {"rateLimit": {"maxAttempts": 3}}


class TestBehindAProxy:
    async def test_a_trusted_proxys_forwarded_address_is_what_the_limiter_locks(
        self, tmp_path: Path
    ) -> None:
        settings = {"gateway": {"auth": LIMIT, "trustedProxies": ["127.0.0.0/8"]}}
        async with gateway(tmp_path, settings) as server:
            other = await failures_then(server, "203.0.113.7", then="203.0.113.8")
            same = await failures_then(server, "203.0.113.9", then="203.0.113.9")
        assert (other.status, same.status) == (200, 429)

    async def test_the_rightmost_untrusted_address_counts_not_what_the_client_wrote(
        self, tmp_path: Path
    ) -> None:
        settings = {"gateway": {"auth": LIMIT, "trustedProxies": ["127.0.0.1", "10.0.0.0/8"]}}
        async with gateway(tmp_path, settings) as server:
            # The client wrote a different leftmost address each time; the proxies added
            # the same real one (and a second, trusted, proxy its own).
            for spoof in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):
                request = raw_request(
                    "GET", "/v1/models", forwarded(f"{spoof}, 198.51.100.4, 10.1.1.1")
                )
                assert (await send(server.port, request)).status == 401
            request = raw_request(
                "GET", "/v1/models", forwarded("198.51.100.4", auth=AUTH["Authorization"])
            )
            assert (await send(server.port, request)).status == 429

    async def test_without_trusted_proxies_x_forwarded_for_is_ignored(self, tmp_path: Path) -> None:
        async with gateway(tmp_path, {"gateway": {"auth": LIMIT}}) as server:
            # Keyed on the peer, 127.0.0.1: another forwarded address does not escape it.
            response = await failures_then(server, "203.0.113.7", then="203.0.113.8")
        assert response.status == 429

    async def test_a_forwarded_client_is_not_loopback_for_the_exemption(
        self, tmp_path: Path
    ) -> None:
        settings = {
            "gateway": {
                "auth": {"rateLimit": {"maxAttempts": 3, "exemptLoopback": True}},
                "trustedProxies": ["127.0.0.1"],
            }
        }
        async with gateway(tmp_path, settings) as server:
            response = await failures_then(server, "203.0.113.7", then="203.0.113.7")
        assert response.status == 429

    async def test_the_addresses_of_one_ipv6_64_prefix_are_one_client(self, tmp_path: Path) -> None:
        # A host on IPv6 is given a /64 and picks any of its 2^64 addresses at will (privacy
        # addresses): counted per address, each guess could come from a fresh one.
        settings = {"gateway": {"auth": LIMIT, "trustedProxies": ["127.0.0.1"]}}
        async with gateway(tmp_path, settings) as server:
            for host in ("1", "2", "3"):
                request = raw_request("GET", "/v1/models", forwarded(f"2001:db8:0:7::{host}"))
                assert (await send(server.port, request)).status == 401
            right = forwarded("2001:db8:0:7:ffff::4", auth=AUTH["Authorization"])
            locked = await send(server.port, raw_request("GET", "/v1/models", right))
            other = forwarded("2001:db8:0:8::1", auth=AUTH["Authorization"])
            next_prefix = await send(server.port, raw_request("GET", "/v1/models", other))
        assert (locked.status, next_prefix.status) == (429, 200)

    async def test_an_ipv4_mapped_address_is_the_ipv4_client(self, tmp_path: Path) -> None:
        # A dual-stack listener (or proxy) writes an IPv4 client as ::ffff:a.b.c.d.
        settings = {"gateway": {"auth": LIMIT, "trustedProxies": ["127.0.0.1"]}}
        async with gateway(tmp_path, settings) as server:
            response = await failures_then(server, "::ffff:203.0.113.7", then="203.0.113.7")
        assert response.status == 429

    async def test_the_request_log_names_the_forwarded_client(self, tmp_path: Path) -> None:
        settings = {"gateway": {"trustedProxies": ["127.0.0.1"]}}
        with production_logging() as log:
            async with served(build_app(tmp_path, settings)) as server:
                headers = forwarded("203.0.113.7", auth=AUTH["Authorization"])
                await send(server.port, raw_request("GET", "/v1/models", headers))
        lines = [e for e in log.read() if e.get("event") == "http_request"]
        assert [e["remote"] for e in lines] == ["203.0.113.7"]


class TestGuessingFromManyAddresses:
    """An attacker with many addresses (a botnet, or the 2^16 /64s of one IPv6 /48) used to
    spread their guesses so thin that none locked out: past the tracked addresses' bound the
    oldest counts were forgotten, and the guessing never ended."""

    async def test_the_guesses_of_many_addresses_are_bounded_and_known_clients_get_in(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        tracked, attempts = 4, 3
        monkeypatch.setattr(AuthRateLimiter, "MAX_TRACKED", tracked)
        settings = {
            "gateway": {
                "auth": {"rateLimit": {"maxAttempts": attempts}},
                "trustedProxies": ["127.0.0.1"],
            }
        }
        right = AUTH["Authorization"]
        addresses = [f"203.0.113.{n}" for n in range(10, 16)]
        addresses += [f"2001:db8:0:{n:x}::1" for n in range(6)]  # one /64 each
        statuses: list[int] = []
        async with gateway(tmp_path, settings) as server:

            async def get(client: str, auth: str = "Bearer wrong") -> int:
                request = raw_request("GET", "/v1/models", forwarded(client, auth=auth))
                return (await send(server.port, request)).status

            assert await get("198.51.100.1", right) == 200  # a client known before the attack
            for _ in range(2):
                for address in addresses:
                    for _ in range(attempts - 1):  # one short of a lockout each time
                        statuses.append(await get(address))
            known, stranger = await get("198.51.100.1", right), await get("198.51.100.2", right)
            # The WebSocket handshake counts in the same limiter.
            async with aiohttp.ClientSession() as session:
                answers = []
                for client in ("198.51.100.1", "2001:db8:1:2::3"):
                    answer, ws = await ws_connect(
                        session, server.url, connect_frame(), **{"X-Forwarded-For": client}
                    )
                    answers.append(answer["ok"] or answer["error"]["details"]["code"])
                    await ws.close()
        guessed = statuses.count(401)
        # Each tracked address guesses until its own lockout; the rest share one budget.
        assert guessed <= tracked * attempts + attempts, statuses
        assert statuses.count(429) == len(statuses) - guessed
        # The client that authenticated before keeps getting in; a new one waits (README).
        assert (known, stranger) == (200, 429)
        assert answers == [True, "AUTH_RATE_LIMITED"]


HOOK_TOKEN = "hook-token-5d2a"


@contextlib.asynccontextmanager
async def under_attack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Mapping[str, Any]
) -> AsyncIterator[tuple[Served, Any]]:
    """A gateway behind a trusted proxy whose limiter has room for 2 clients and locks out at
    2 failures; yields it and `attack()`, which fills the table with wrong tokens from 6
    addresses and locks out the clients it has no room for."""
    monkeypatch.setattr(AuthRateLimiter, "MAX_TRACKED", 2)
    base = {"gateway": {"auth": {"rateLimit": {"maxAttempts": 2}}, "trustedProxies": ["127.0.0.1"]}}
    async with gateway(tmp_path, merged(base, settings)) as server:

        async def attack() -> None:
            for n in range(6):
                request = raw_request("GET", "/v1/models", forwarded(f"203.0.113.{n}"))
                await send(server.port, request)

        yield server, attack


async def hook_call(server: Served, client: str, token: str) -> int:
    """A wake hook with `token` from `client`: 400 (its body, `{}`, has no text) once the token
    was accepted, 401 or 429 when not."""
    headers = [*forwarded(client, auth=f"Bearer {token}"), ("Content-Type", "application/json")]
    return (await send(server.port, raw_request("POST", "/hooks/wake", headers, b"{}"))).status


async def gateway_call(server: Served, client: str, token: str) -> int:
    request = raw_request("GET", "/v1/models", forwarded(client, auth=f"Bearer {token}"))
    return (await send(server.port, request)).status


HOOKS = {"hooks": {"enabled": True, "token": HOOK_TOKEN}}


class TestKnownClientsDuringAnAttack:
    """While the limiter's table is full, the clients that proved a secret before keep counts
    of their own (the others share one, locked out): the hook token's callers too, and only
    while the secret they proved is still the one in force."""

    async def test_a_hook_caller_known_before_the_attack_gets_in(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async with under_attack(tmp_path, monkeypatch, HOOKS) as (server, attack):
            assert await hook_call(server, "198.51.100.1", HOOK_TOKEN) == 400
            await attack()
            known = await hook_call(server, "198.51.100.1", HOOK_TOKEN)
            stranger = await hook_call(server, "198.51.100.2", HOOK_TOKEN)
        assert (known, stranger) == (400, 429)

    async def test_a_hook_caller_s_success_does_not_forgive_its_gateway_token_failures(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async with under_attack(tmp_path, monkeypatch, HOOKS) as (server, _):
            assert await gateway_call(server, "198.51.100.1", "wrong") == 401
            assert await hook_call(server, "198.51.100.1", HOOK_TOKEN) == 400
            assert await gateway_call(server, "198.51.100.1", "wrong") == 401
            assert await gateway_call(server, "198.51.100.1", TOKEN) == 429

    @pytest.mark.parametrize("secret", ["gateway", "hooks"])
    async def test_a_client_known_by_a_rotated_secret_is_known_no_longer(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
    ) -> None:
        async with under_attack(tmp_path, monkeypatch, HOOKS) as (server, attack):
            if secret == "gateway":
                assert await gateway_call(server, "198.51.100.1", TOKEN) == 200
                rotated = {"gateway": {"auth": {"token": "rotated-token-91b0"}}}
            else:
                assert await hook_call(server, "198.51.100.1", HOOK_TOKEN) == 400
                rotated = {"hooks": {"token": "rotated-hook-token-3e"}}
            # The other secret's known client stays known.
            other = "198.51.100.9"
            if secret == "gateway":
                assert await hook_call(server, other, HOOK_TOKEN) == 400
            else:
                assert await gateway_call(server, other, TOKEN) == 200
            path = tmp_path / "clawgate.json5"
            path.write_text(json.dumps(merged(json.loads(path.read_text()), rotated)))
            assert await reload_from_file(server.state) is not None
            await attack()
            # Knowing only the old secret, it guesses with the others' locked-out budget.
            if secret == "gateway":
                old_secret_holder = await gateway_call(server, "198.51.100.1", TOKEN)
                still_known = await hook_call(server, other, HOOK_TOKEN)
            else:
                old_secret_holder = await hook_call(server, "198.51.100.1", HOOK_TOKEN)
                still_known = await gateway_call(server, other, TOKEN)
        assert old_secret_holder == 429
        assert still_known == (400 if secret == "gateway" else 200)


class TestPreAuthCaps:
    async def test_over_the_per_address_cap_an_upgrade_gets_503(self, tmp_path: Path) -> None:
        settings = {"gateway": {"ws": {"preAuth": {"maxPerAddress": 2}}}}
        async with gateway(tmp_path, settings) as server, aiohttp.ClientSession() as session:
            waiting = [await session.ws_connect(server.url) for _ in range(2)]
            refused = await upgrade(server.port, "127.0.0.1")
            assert (refused.status, refused.json()) == (503, PREAUTH_FULL)
            assert refused.headers["retry-after"] == "1"
            assert_error_body(refused)
            # Once one has authenticated, its place is free again.
            await waiting[0].receive_json(timeout=5)
            await waiting[0].send_json(connect_frame())
            assert (await waiting[0].receive_json(timeout=5))["ok"] is True
            assert (await upgrade(server.port, "127.0.0.1")).status == 101
            for ws in waiting:
                await ws.close()

    async def test_a_refused_socket_counts_until_it_is_closed(self, tmp_path: Path) -> None:
        # A client that fails the handshake and never answers the server's close keeps its
        # socket open for the close timeout; uncounted, one address could hold any number.
        settings = {"gateway": {"ws": {"preAuth": {"maxPerAddress": 2}}}}
        async with gateway(tmp_path, settings) as server, aiohttp.ClientSession() as session:
            lingering = []
            for _ in range(2):
                ws = await session.ws_connect(server.url, autoclose=False)
                await ws.receive_json(timeout=5)  # the challenge
                await ws.send_str("not json")
                closing = await ws.receive(timeout=5)
                assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1000)
                lingering.append(ws)  # the server's close is left unanswered
            refused = await upgrade(server.port, "127.0.0.1")
            assert refused.status == 503
            assert refused.json() == PREAUTH_FULL
            for ws in lingering:
                await ws.close()
            await asyncio.sleep(0.2)  # the server sees the closes
            assert (await upgrade(server.port, "127.0.0.1")).status == 101

    async def test_an_address_whose_sockets_all_closed_is_forgotten(self, tmp_path: Path) -> None:
        # Kept at zero, every address that ever opened a socket would hold an entry for good.
        settings = {"gateway": {"trustedProxies": ["127.0.0.1"]}}
        async with gateway(tmp_path, settings) as server, aiohttp.ClientSession() as session:
            counted = server.app[WS].preauth
            for host in ("203.0.113.1", "203.0.113.2"):
                ws = await session.ws_connect(server.url, headers={"X-Forwarded-For": host})
                await ws.receive_json(timeout=5)  # the challenge
                assert set(counted) == {host}
                await ws.close()
                async with asyncio.timeout(5):
                    while counted:  # the server sees the close
                        await asyncio.sleep(0.01)

    async def test_the_addresses_of_one_ipv6_64_share_the_per_address_cap(
        self, tmp_path: Path
    ) -> None:
        settings = {
            "gateway": {"ws": {"preAuth": {"maxPerAddress": 2}}, "trustedProxies": ["127.0.0.1"]}
        }
        async with gateway(tmp_path, settings) as server, aiohttp.ClientSession() as session:
            waiting = [
                await session.ws_connect(
                    server.url, headers={"X-Forwarded-For": f"2001:db8:0:7::{i}"}
                )
                for i in (1, 2)
            ]
            same = ("X-Forwarded-For", "2001:db8:0:7::3")
            refused = await upgrade(server.port, "127.0.0.1", same)
            other = await upgrade(server.port, "127.0.0.1", ("X-Forwarded-For", "2001:db8:0:8::1"))
            for ws in waiting:
                await ws.close()
        assert (refused.status, other.status) == (503, 101)
        assert refused.json() == PREAUTH_FULL

    async def test_over_the_overall_cap_an_upgrade_gets_503(self, tmp_path: Path) -> None:
        settings = {
            "gateway": {
                "ws": {"preAuth": {"maxConnections": 3, "maxPerAddress": 3}},
                "trustedProxies": ["127.0.0.1"],
            }
        }
        async with gateway(tmp_path, settings) as server, aiohttp.ClientSession() as session:
            waiting = [
                await session.ws_connect(server.url, headers={"X-Forwarded-For": f"192.0.2.{i}"})
                for i in range(3)
            ]
            refused = await upgrade(server.port, "127.0.0.1", ("X-Forwarded-For", "192.0.2.99"))
            assert (refused.status, refused.json()) == (503, PREAUTH_FULL)
            await waiting[0].close()
            await asyncio.sleep(0.2)  # the server sees the close
            reopened = await upgrade(server.port, "127.0.0.1", ("X-Forwarded-For", "192.0.2.99"))
            assert reopened.status == 101
            for ws in waiting:
                await ws.close()


class TestReadyzGuessing:
    async def test_wrong_secrets_on_readyz_count_toward_the_lockout(self, tmp_path: Path) -> None:
        # /readyz compares the bearer secret when it may show why it is not ready; that
        # comparison goes through the limiter like any other.
        settings = {"gateway": {"auth": LIMIT, "trustedProxies": ["127.0.0.1"]}}
        async with gateway(tmp_path, settings) as server:
            server.state.ready = False  # still starting: details are on offer
            for _ in range(3):
                request = raw_request("GET", "/readyz", forwarded("203.0.113.7"))
                response = await send(server.port, request)
                assert (response.status, response.json()) == (503, {"ready": False})
            right = forwarded("203.0.113.7", auth=AUTH["Authorization"])
            readyz = await send(server.port, raw_request("GET", "/readyz", right))
            models = await send(server.port, raw_request("GET", "/v1/models", right))
        assert readyz.json() == {"ready": False}  # locked out: no details either
        assert models.status == 429

    async def test_the_right_secret_on_readyz_shows_the_details(self, tmp_path: Path) -> None:
        settings = {"gateway": {"trustedProxies": ["127.0.0.1"]}}
        async with gateway(tmp_path, settings) as server:
            server.state.ready = False
            right = forwarded("203.0.113.7", auth=AUTH["Authorization"])
            response = await send(server.port, raw_request("GET", "/readyz", right))
        assert response.json()["failing"] == ["startup"]
