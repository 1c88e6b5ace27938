"""The edge's pure decisions (gateway/edge.py) and the one credential check (gateway/auth.py)."""

from __future__ import annotations

import pytest

from gateway.auth import (
    Authenticated,
    AuthFailure,
    AuthFailureReason,
    AuthRateLimiter,
    authenticate,
)
from gateway.config.model import AuthConfig, RateLimitConfig
from gateway.edge import (
    client_address,
    client_key,
    normalize_origin,
    origin_allowed,
    split_host,
)


class TestClientAddress:
    @pytest.mark.parametrize(
        ("peer", "forwarded", "trusted", "client"),
        [
            ("127.0.0.1", ["203.0.113.7"], (), "127.0.0.1"),  # no trusted proxies: ignored
            ("10.0.0.9", ["203.0.113.7"], ("127.0.0.1",), "10.0.0.9"),  # peer not trusted
            ("127.0.0.1", ["203.0.113.7"], ("127.0.0.1",), "203.0.113.7"),
            ("127.0.0.1", ["1.1.1.1, 203.0.113.7"], ("127.0.0.1",), "203.0.113.7"),
            (
                "127.0.0.1",
                ["1.1.1.1", "203.0.113.7, 10.0.0.2"],
                ("127.0.0.1", "10.0.0.0/8"),
                "203.0.113.7",
            ),
            ("127.0.0.1", ["10.0.0.2"], ("127.0.0.1", "10.0.0.0/8"), "10.0.0.2"),  # all trusted
            ("127.0.0.1", ["garbage, 203.0.113.7"], ("127.0.0.1",), "203.0.113.7"),
            ("127.0.0.1", ["203.0.113.7, garbage"], ("127.0.0.1",), "127.0.0.1"),
            ("127.0.0.1", [], ("127.0.0.1",), "127.0.0.1"),
            ("::1", ["[2001:db8::1]"], ("::1",), "2001:db8::1"),
            # As some proxies write a hop: with its port, or a dual-stack socket's mapped IPv4.
            ("127.0.0.1", ["203.0.113.7:51234"], ("127.0.0.1",), "203.0.113.7"),
            ("::1", ["[2001:db8::1]:443"], ("::1",), "2001:db8::1"),
            (
                "127.0.0.1",
                ["203.0.113.7, ::ffff:10.0.0.2"],
                ("127.0.0.1", "10.0.0.0/8"),
                "203.0.113.7",
            ),
            ("::ffff:127.0.0.1", ["203.0.113.7"], ("127.0.0.1",), "203.0.113.7"),
            ("127.0.0.1", ["203.0.113.7:port"], ("127.0.0.1",), "127.0.0.1"),  # garbage
            ("127.0.0.1", ["[2001:db8::1]x"], ("127.0.0.1",), "127.0.0.1"),  # garbage
        ],
    )
    def test_the_rightmost_untrusted_address(
        self, peer: str, forwarded: list[str], trusted: tuple[str, ...], client: str
    ) -> None:
        assert client_address(peer, forwarded, trusted) == client


class TestClientKey:
    @pytest.mark.parametrize(
        ("client", "key"),
        [
            ("203.0.113.7", "203.0.113.7"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("2001:db8:0:7::1", "2001:db8:0:7::/64"),
            ("2001:db8:0:7:ffff:ffff:ffff:ffff", "2001:db8:0:7::/64"),
            ("fe80::1%eth0", "fe80::/64"),
            ("::1", "::/64"),
            ("not an address", "not an address"),
        ],
    )
    def test_an_ipv6_client_is_its_64_and_a_mapped_one_its_ipv4(
        self, client: str, key: str
    ) -> None:
        assert client_key(client) == key


class TestHost:
    @pytest.mark.parametrize(
        ("value", "host"),
        [
            ("127.0.0.1:18789", "127.0.0.1"),
            ("LocalHost.", "localhost"),
            ("[::1]:80", "::1"),
            ("gw.example", "gw.example"),
            ("[::1", None),
            ("::1", None),
            ("a b", None),
            ("h:port", None),
            ("\u00e9.example", None),
            ("127.0.0.1:\u0661", None),  # a digit, but not ASCII
            ("[::1]:\u00b2", None),
            ("", None),
        ],
    )
    def test_split_host(self, value: str, host: str | None) -> None:
        assert split_host(value) == host


class TestOrigin:
    @pytest.mark.parametrize(
        ("text", "origin"),
        [
            ("HTTPS://A.example:443", "https://a.example"),
            ("http://a.example:8080", "http://a.example:8080"),
            ("http://[::1]:1", "http://[::1]:1"),
            ("null", None),
            ("https://a.example/", None),
            ("https://u@a.example", None),
            ("ws://a.example", None),
        ],
    )
    def test_normalize(self, text: str, origin: str | None) -> None:
        assert normalize_origin(text) == origin

    def test_own_origin_is_same_scheme_host_and_port(self) -> None:
        assert origin_allowed("http://localhost:1", "http", "LOCALHOST:1", ())
        assert not origin_allowed("https://localhost:1", "http", "localhost:1", ())
        assert not origin_allowed("http://localhost:2", "http", "localhost:1", ())
        assert origin_allowed("http://127.0.0.1", "http", "127.0.0.1:80", ())

    def test_listed_origins_are_allowed(self) -> None:
        assert origin_allowed("https://ui.example", "http", "x", ("https://ui.example",))


TOKEN = AuthConfig(mode="token", token="t")


def limiter(**settings: object) -> AuthRateLimiter:
    return AuthRateLimiter(RateLimitConfig(max_attempts=2, **settings))  # type: ignore[arg-type]


class TestAuthenticate:
    def test_the_right_secret(self) -> None:
        assert authenticate(TOKEN, limiter(), "t", "1.2.3.4", browser=False) == Authenticated(
            "token"
        )

    def test_missing_is_not_counted_and_mismatch_is(self) -> None:
        lim = limiter()
        for _ in range(3):
            assert authenticate(TOKEN, lim, None, "1.2.3.4", browser=False) == AuthFailure(
                AuthFailureReason.MISSING
            )
        assert authenticate(TOKEN, lim, "x", "1.2.3.4", browser=False) == AuthFailure(
            AuthFailureReason.MISMATCH
        )
        assert authenticate(TOKEN, lim, "x", "1.2.3.4", browser=False) == AuthFailure(
            AuthFailureReason.MISMATCH
        )
        locked = authenticate(TOKEN, lim, "t", "1.2.3.4", browser=False)
        assert isinstance(locked, AuthFailure) and locked.reason == AuthFailureReason.LOCKED_OUT
        assert locked.retry_after == 300

    def test_loopback_is_not_exempt_by_default(self) -> None:
        lim = limiter()
        for _ in range(2):
            authenticate(TOKEN, lim, "x", "127.0.0.1", browser=False)
        assert authenticate(TOKEN, lim, "t", "127.0.0.1", browser=False) == AuthFailure(
            AuthFailureReason.LOCKED_OUT, 300
        )

    def test_an_exempt_loopback_is_not_exempt_as_a_browser(self) -> None:
        lim = limiter(exempt_loopback=True)
        for _ in range(2):
            authenticate(TOKEN, lim, "x", "127.0.0.1", browser=True)
        assert authenticate(TOKEN, lim, "t", "127.0.0.1", browser=True) == AuthFailure(
            AuthFailureReason.LOCKED_OUT, 300
        )
        assert authenticate(TOKEN, lim, "t", "127.0.0.1", browser=False) == Authenticated("token")

    def test_a_mapped_loopback_address_is_loopback(self) -> None:
        lim = limiter(exempt_loopback=True)
        for _ in range(3):
            authenticate(TOKEN, lim, "x", "::ffff:127.0.0.1", browser=False)
        assert authenticate(TOKEN, lim, "t", "::ffff:127.0.0.1", browser=False) == Authenticated(
            "token"
        )

    def test_mode_none(self) -> None:
        none = AuthConfig(mode="none")
        assert authenticate(none, limiter(), None, None, browser=True) == Authenticated("none")


class TestLimiterWindow:
    """The failures that count are those within `windowMs`; the addresses tracked are bounded."""

    def test_failures_older_than_the_window_do_not_count(self) -> None:
        now = [0.0]
        lim = AuthRateLimiter(RateLimitConfig(max_attempts=2, window_ms=1000), clock=lambda: now[0])
        authenticate(TOKEN, lim, "x", "1.2.3.4", browser=False)
        now[0] = 1.0  # the first failure is a whole window old
        authenticate(TOKEN, lim, "x", "1.2.3.4", browser=False)
        assert authenticate(TOKEN, lim, "t", "1.2.3.4", browser=False) == Authenticated("token")

    def test_failures_within_the_window_lock_out(self) -> None:
        now = [0.0]
        lim = AuthRateLimiter(RateLimitConfig(max_attempts=2, window_ms=1000), clock=lambda: now[0])
        authenticate(TOKEN, lim, "x", "1.2.3.4", browser=False)
        now[0] = 0.999
        authenticate(TOKEN, lim, "x", "1.2.3.4", browser=False)
        assert authenticate(TOKEN, lim, "t", "1.2.3.4", browser=False) == AuthFailure(
            AuthFailureReason.LOCKED_OUT, 300
        )

    def test_a_full_table_counts_the_other_addresses_as_one_client(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(AuthRateLimiter, "MAX_TRACKED", 3)
        now = [0.0]
        lim = AuthRateLimiter(RateLimitConfig(max_attempts=2, window_ms=1000), clock=lambda: now[0])
        assert authenticate(TOKEN, lim, "t", "10.0.0.9", browser=False) == Authenticated("token")
        for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "2001:db8::1"):
            authenticate(TOKEN, lim, "x", ip, browser=False)
        # The first three keep their counts; the next two shared one, and it locked out
        # every address the table has no room for.
        for ip in ("10.0.0.4", "2001:db8:0:1::1", "10.0.0.5"):
            assert authenticate(TOKEN, lim, "t", ip, browser=False) == AuthFailure(
                AuthFailureReason.LOCKED_OUT, 300
            )
        assert authenticate(TOKEN, lim, "t", "10.0.0.9", browser=False) == Authenticated("token")
        authenticate(TOKEN, lim, "x", "10.0.0.1", browser=False)  # its own second failure
        assert authenticate(TOKEN, lim, "t", "10.0.0.1", browser=False) == AuthFailure(
            AuthFailureReason.LOCKED_OUT, 300
        )
        assert authenticate(TOKEN, lim, "t", "10.0.0.2", browser=False) == Authenticated("token")
        # Once the counts are a window old the table has room: an address counts on its own.
        now[0] = 1.0
        assert authenticate(TOKEN, lim, "t", "10.0.0.5", browser=False) == Authenticated("token")

    def test_a_known_client_keeps_a_count_of_its_own_while_the_table_is_full(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(AuthRateLimiter, "MAX_TRACKED", 2)
        lim = limiter()
        authenticate(TOKEN, lim, "t", "10.0.0.9", browser=False)
        for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"):
            authenticate(TOKEN, lim, "x", ip, browser=False)
        authenticate(TOKEN, lim, "x", "10.0.0.9", browser=False)
        assert authenticate(TOKEN, lim, "t", "10.0.0.9", browser=False) == Authenticated("token")
        for _ in range(2):
            authenticate(TOKEN, lim, "x", "10.0.0.9", browser=False)
        assert authenticate(TOKEN, lim, "t", "10.0.0.9", browser=False) == AuthFailure(
            AuthFailureReason.LOCKED_OUT, 300
        )

    def test_the_tables_stay_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(AuthRateLimiter, "MAX_TRACKED", 5)
        lim = limiter()
        for n in range(200):
            authenticate(TOKEN, lim, "t", f"10.1.{n // 256}.{n % 256}", browser=False)
            for _ in range(3):
                authenticate(TOKEN, lim, "x", f"2001:db8:{n:x}::1", browser=False)
        assert len(lim._failures) + len(lim._locked_until) <= 5
        assert len(lim._known) == 5
