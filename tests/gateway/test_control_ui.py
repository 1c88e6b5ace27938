"""The Control UI's files over HTTP (gateway/http/controlui.py) and the shape of the files
themselves: what the Content-Security-Policy demands of them."""

from __future__ import annotations

import configparser
import fnmatch
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.http.controlui import CONTENT_SECURITY_POLICY, FILES
from tests.support.configs import MakeConfig
from tests.support.raw_http import raw_exchange, request_head

Client = TestClient[web.Request, web.Application]
AiohttpClient = Callable[[web.Application], Awaitable[Client]]
REPO = Path(__file__).resolve().parents[2]
UI = REPO / "gateway" / "ui"
NOT_FOUND = b'{"error":{"message":"Not Found","type":"not_found_error","param":null,"code":null}}'


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, make_config: MakeConfig) -> Client:
    return await aiohttp_client(create_app(make_config()))


class TestServing:
    async def test_a_browsers_icon_request_gets_no_icon_not_a_404(self, client: Client) -> None:
        response = await client.get("/favicon.ico")
        assert (response.status, await response.read()) == (204, b"")
        assert response.headers["Cache-Control"] == "max-age=86400"

    async def test_the_page_is_at_the_root_with_a_strict_policy(self, client: Client) -> None:
        response = await client.get("/")
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert response.headers["Content-Security-Policy"] == (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
            " connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none';"
            " form-action 'none'; frame-ancestors 'none'"
        )
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        # Linked relative to the page, so that it also works under a base path.
        assert b'<script type="module" src="ui/app.js"></script>' in await response.read()

    @pytest.mark.parametrize(
        ("name", "content_type"),
        [
            ("app.js", "text/javascript; charset=utf-8"),
            ("gateway.js", "text/javascript; charset=utf-8"),
            ("app.css", "text/css; charset=utf-8"),
        ],
    )
    async def test_files_have_their_exact_content_type(
        self, client: Client, name: str, content_type: str
    ) -> None:
        response = await client.get(f"/ui/{name}")
        assert response.status == 200
        assert response.headers["Content-Type"] == content_type
        assert await response.read() == (UI / name).read_bytes()

    async def test_an_unchanged_file_is_a_304(self, client: Client) -> None:
        first = await client.get("/ui/app.js")
        etag = first.headers["ETag"]
        again = await client.get("/ui/app.js", headers={"If-None-Match": etag})
        assert again.status == 304
        assert await again.read() == b""
        assert again.headers["ETag"] == etag

    async def test_head_has_no_body(self, client: Client) -> None:
        response = await client.head("/")
        assert response.status == 200
        assert await response.read() == b""

    @pytest.mark.parametrize(
        "path", ["/ui/nope.js", "/ui/index.html", "/ui/..%2Fconfig.py", "/ui/", "/ui/__init__.py"]
    )
    async def test_anything_else_under_ui_is_a_json_404(self, client: Client, path: str) -> None:
        response = await client.get(path)
        assert (response.status, await response.read()) == (404, NOT_FOUND)

    @pytest.mark.parametrize("path", ["/ui//app.js", "//ui/app.js", "///ui///app.js"])
    async def test_a_doubled_slash_serves_the_file(self, client: Client, path: str) -> None:
        # Paths with `//` are merged before routing (http-openai.md §1), for every route:
        # the handler of the merged route needs its own `{name}`, not the merge route's.
        status, headers, body = await raw_exchange(client.port, request_head("GET", path))
        assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8")
        assert body == (UI / "app.js").read_bytes()

    async def test_other_methods_are_refused(self, client: Client) -> None:
        response = await client.post("/", data=b"x")
        assert response.status == 405
        assert response.headers["Allow"] == "GET, HEAD"


class TestEnabled:
    @pytest.mark.parametrize(
        ("text", "served"),
        [
            ("{}", True),  # loopback by default
            ("{gateway: {controlUi: {enabled: false}}}", False),
            ('{gateway: {bind: "lan", auth: {token: "t"}}}', False),
            ('{gateway: {bind: "lan", auth: {token: "t"}, controlUi: {enabled: true}}}', True),
        ],
    )
    async def test_on_for_loopback_unless_set(
        self, aiohttp_client: AiohttpClient, make_config: MakeConfig, text: str, served: bool
    ) -> None:
        client = await aiohttp_client(create_app(make_config(text)))
        for path in ("/", "/ui/app.js"):
            assert (await client.get(path)).status == (200 if served else 404)


class TestBasePath:
    """`gateway.controlUi.basePath`: the page at `/ops/`, its files at `/ops/ui/<name>`."""

    @pytest.fixture
    async def based(self, aiohttp_client: AiohttpClient, make_config: MakeConfig) -> Client:
        config = make_config('{gateway: {controlUi: {basePath: "/ops"}}}')
        return await aiohttp_client(create_app(config))

    async def test_the_page_and_its_files_are_under_it(self, based: Client) -> None:
        page = await based.get("/ops/")
        assert page.status == 200
        assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert await page.read() == (UI / "index.html").read_bytes()
        for name in ("app.js", "app.css"):
            response = await based.get(f"/ops/ui/{name}")
            assert (response.status, await response.read()) == (200, (UI / name).read_bytes())

    async def test_the_base_path_itself_redirects_to_the_page(self, based: Client) -> None:
        response = await based.get("/ops", allow_redirects=False)
        assert (response.status, response.headers["Location"]) == (302, "/ops/")

    @pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
    async def test_the_base_path_itself_answers_another_method_as_its_page_does(
        self, based: Client, method: str
    ) -> None:
        """A 405 naming GET and HEAD, as `/ops/` answers, the methods the path takes (its
        302); it was a 404, as if nothing were there."""
        request = f"{method} /ops HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        status, headers, _ = await raw_exchange(based.port, request.encode())
        page_status, page_headers, _ = await raw_exchange(
            based.port, request.replace("/ops", "/ops/").encode()
        )
        assert (status, headers["allow"]) == (405, "GET, HEAD")
        assert (page_status, page_headers["allow"]) == (405, "GET, HEAD")

    @pytest.mark.parametrize(
        ("query", "kept"),
        [
            (b"a=1&b=%2F", "a=1&b=%2F"),
            # Escapes stay escapes: decoded, a newline or NUL made the answer fail (no answer
            # at all), `%23` cut the query at a fragment, `%20` lost its space.
            (b"x=%0d%0aSet-Cookie:%20a=b", "x=%0d%0aSet-Cookie:%20a=b"),
            (b"x=%00", "x=%00"),
            (b"x=%23y", "x=%23y"),
            (b"x=%E2%80%A8&y=%20", "x=%E2%80%A8&y=%20"),
            (b"x=%ED%A0%80", "x=%ED%A0%80"),
            # What may not stand in a URL as sent is escaped.
            (b'q="<>{|}^`', "q=%22%3C%3E%7B%7C%7D%5E%60"),
        ],
    )
    async def test_the_redirect_keeps_the_query_as_sent(
        self, based: Client, query: bytes, kept: str
    ) -> None:
        request = (
            b"GET /ops?" + query + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        status, headers, _ = await raw_exchange(based.port, request)
        assert (status, headers["location"]) == (302, f"/ops/?{kept}")

    @pytest.mark.parametrize(
        "path", ["/", "/ui/app.js", "/ops/ui/index.html", "/ops/ui/x/app.js", "/ops/chat"]
    )
    async def test_nothing_else_is_served(self, based: Client, path: str) -> None:
        response = await based.get(path)
        assert (response.status, await response.read()) == (404, NOT_FOUND)

    @pytest.mark.parametrize("path", ["/favicon.ico", "/ops/favicon.ico"])
    async def test_a_browsers_icon_request_gets_no_icon_not_a_404(
        self, based: Client, path: str
    ) -> None:
        # Chromium asks the origin's root even when the page links its icon (a 404 then in
        # its console).
        response = await based.get(path)
        assert (response.status, await response.read()) == (204, b"")
        assert (await based.post(path, data=b"x")).status == 405

    async def test_other_methods_are_refused(self, based: Client) -> None:
        response = await based.post("/ops/", data=b"x")
        assert (response.status, response.headers["Allow"]) == (405, "GET, HEAD")


class TestFiles:
    """The files obey the policy they are served with."""

    def test_every_file_is_served(self) -> None:
        assert sorted(FILES) == sorted(p.name for p in UI.iterdir() if p.is_file())

    def test_every_file_is_package_data(self) -> None:
        parser = configparser.ConfigParser()
        parser.read(REPO / "setup.cfg")
        globs = [g.strip() for g in parser["options.package_data"]["gateway"].split(",")]
        for path in UI.iterdir():
            assert any(fnmatch.fnmatch(f"ui/{path.name}", g) for g in globs), path.name

    def test_no_inline_script_style_or_handlers_in_the_page(self) -> None:
        html = (UI / "index.html").read_text()
        assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="ui/app.js">']
        assert "<style" not in html
        assert re.search(r"\sstyle=", html) is None
        assert re.search(r"\son[a-z]+=", html) is None

    @pytest.mark.parametrize("name", sorted(n for n in FILES if n.endswith(".js")))
    def test_scripts_never_parse_server_text_as_html(self, name: str) -> None:
        source = (UI / name).read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in source, f"{name} uses {sink}"

    def test_the_policy_allows_no_inline_code(self) -> None:
        assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
        assert "'unsafe-eval'" not in CONTENT_SECURITY_POLICY
