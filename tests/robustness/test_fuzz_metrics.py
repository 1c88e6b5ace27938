"""Property-based fuzzing of `GET /metrics`: hostile methods, headers and query strings.

Whatever arrives, the answer is below 500, an error in JSON has the four-key shape, a 200 is
the text format that prometheus_client's parser reads, nothing is logged as an error, and a
proper scrape still works right after. One gateway serves the module, as `clawgate run`
serves it; generation is derandomized and bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from hypothesis import event, given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.support.raw_http import RawResponse, exchange, request_bytes
from tests.support.served import TOKEN, Served, ServerLog, build_app, production_logging
from tests.support.served import served as serve
from tests.support.spec_checks import JSON_TYPE, assert_documented_status, assert_error_body
from tests.support.strategies import bytes_of, fuzz, odd_text

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),
]

METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BEARER = f"Bearer {TOKEN}".encode()
TOKEN_CHARS = list(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# What a request target's query may carry on the wire, `%` escapes and `?` included.
QUERY_CHARS = [b for b in range(0x21, 0x7F) if b != ord("#")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Served, ServerLog]]:
    # Loopback clients exempt: hundreds of wrong tokens must not lock out the checks that
    # follow each example (the lockout itself is tested in tests/metrics).
    overrides = {"gateway": {"auth": {"rateLimit": {"exemptLoopback": True}}}}
    with production_logging() as log:
        app = build_app(tmp_path_factory.mktemp("fuzz-metrics"), overrides)
        async with serve(app) as server:
            yield server, log
        assert log.new_problems() == []


def clean(value: bytes) -> bytes:
    """Without the bytes that would end the header (tested by the HTTP fuzzing)."""
    return value.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")


async def check(server: Served, log: ServerLog, response: RawResponse) -> None:
    event(f"status {response.status}")
    assert_documented_status(response.status)
    assert response.status < 500, response
    if response.status == 200:
        assert response.headers.get("content-type") == METRICS_TYPE, response
        list(text_string_to_metric_families(response.body.decode()))
    elif response.headers.get("content-type") == JSON_TYPE:
        assert_error_body(response)
    scrape = await exchange(
        server.port, request_bytes("GET", "/metrics", {"Authorization": BEARER})
    )
    assert scrape.status == 200, scrape
    names = {f.name for f in text_string_to_metric_families(scrape.body.decode())}
    assert "clawgate_http_requests" in names
    assert log.new_problems() == []


class TestFuzzMetrics:
    @fuzz(60)
    @given(
        method=st.one_of(
            st.sampled_from(
                [
                    "GET",
                    "POST",
                    "PUT",
                    "DELETE",
                    "OPTIONS",
                    "PATCH",
                    "TRACE",
                    "get",
                    "PROPFIND",
                    "M-SEARCH",
                    "BREW",
                    "G" * 300,
                ]
            ),
            bytes_of(TOKEN_CHARS, max_size=30).filter(bool).map(bytes.decode),
        ).filter(lambda m: m != "HEAD")  # a body-less answer `exchange` cannot read; tested apart
    )
    async def test_any_method_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], method: str
    ) -> None:
        server, log = gateway
        request = request_bytes(method, "/metrics", {"Authorization": BEARER})
        await check(server, log, await exchange(server.port, request))

    @fuzz(80)
    @given(query=bytes_of(QUERY_CHARS, max_size=200))
    async def test_any_query_string_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], query: bytes
    ) -> None:
        server, log = gateway
        path = "/metrics?" + query.decode()
        request = request_bytes("GET", path, {"Authorization": BEARER})
        await check(server, log, await exchange(server.port, request))

    @fuzz(80)
    @given(
        name=st.sampled_from(
            [
                "Authorization",
                "Accept",
                "Accept-Encoding",
                "X-Forwarded-For",
                "Origin",
                "Range",
                "If-None-Match",
                "Content-Type",
                "Upgrade",
                "X-Request-Id",
                "Expect",
            ]
        ),
        value=st.one_of(
            odd_text.map(lambda s: s.encode("utf-8", "surrogatepass")),
            st.sampled_from(
                [
                    b"",
                    b"\xff\xfe",
                    b"Bearer",
                    b"Bearer ",
                    BEARER + b"\xff",
                    b"x" * 8000,
                    b"application/openmetrics-text; version=1.0.0",
                    b"gzip, br, zstd",
                    b"bytes=0-10",
                    b"websocket",
                    b"*/*;q=0",
                ]
            ),
        ).map(clean),
        authorized=st.booleans(),
    )
    async def test_any_header_gets_a_documented_answer(
        self, gateway: tuple[Served, ServerLog], name: str, value: bytes, authorized: bool
    ) -> None:
        server, log = gateway
        headers: dict[str, str | bytes] = {"Authorization": BEARER} if authorized else {}
        headers[name] = value
        request = request_bytes("GET", "/metrics", headers)
        await check(server, log, await exchange(server.port, request))
