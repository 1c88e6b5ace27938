"""A Control UI build of the operator's served at `/` (`gateway.controlUi.root`,
gateway/http/controlui_root.py): its files, its page routes, and nothing outside it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.appkeys import STATE
from gateway.http.controlui_root import resolve
from tests.support.configs import MakeConfig
from tests.support.strategies import fuzz

Client = TestClient[web.Request, web.Application]
AiohttpClient = Callable[[web.Application], Awaitable[Client]]
NOT_FOUND = b'{"error":{"message":"Not Found","type":"not_found_error","param":null,"code":null}}'
HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"  # a navigation's
INLINE = "globalThis.booted = true;"
INDEX = f"""<!doctype html>
<html data-openclaw-control-ui-build-id="b1" lang="en">
  <head>
    <link rel="icon" href="./favicon.svg" />
    <script>{INLINE}</script>
    <script type="module" crossorigin src="./assets/index-1.js"></script>
    <link rel="stylesheet" href="./assets/app.css">
  </head>
  <body><openclaw-app></openclaw-app></body>
</html>
"""


def make_build(tmp_path: Path) -> Path:
    """A build's shape: index.html, assets, a dot file, a link out and a link within."""
    root = tmp_path / "control-ui"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "favicon.svg").write_text("<svg/>")
    (root / "assets" / "index-1.js").write_text("export {};")
    (root / "assets" / "app.css").write_text("body{}")
    (root / "manifest.webmanifest").write_text("{}")
    (root / ".env").write_text("SECRET=1")
    (tmp_path / "outside.txt").write_text("outside")
    (root / "assets" / "escape.js").symlink_to(tmp_path / "outside.txt")
    (root / "assets" / "inside.js").symlink_to(root / "assets" / "index-1.js")
    return root


@pytest.fixture
def build(tmp_path: Path) -> Path:
    return make_build(tmp_path)


@pytest.fixture(scope="module")
def module_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One build for all of a fuzz test's examples."""
    return make_build(tmp_path_factory.mktemp("fuzz")).resolve()


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, make_config: MakeConfig, build: Path) -> Client:
    config = make_config(json.dumps({"gateway": {"controlUi": {"root": str(build)}}}))
    return await aiohttp_client(create_app(config))


class TestPage:
    async def test_the_builds_page_is_at_the_root_stamped_as_openclaw_stamps_it(
        self, client: Client
    ) -> None:
        response = await client.get("/")
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Frame-Options"] == "DENY"
        page = await response.text()
        stamp = 'data-openclaw-control-ui-base-path="" data-openclaw-terminal-enabled="false"'
        assert f'<html {stamp} lang="en">' in page
        assert "build-id" not in page
        assert 'src="/assets/index-1.js"' in page
        assert 'href="/assets/app.css"' in page
        assert 'href="/favicon.svg"' in page

    async def test_its_inline_scripts_are_allowed_by_hash_and_inline_styles_at_all(
        self, client: Client
    ) -> None:
        policy = (await client.get("/")).headers["Content-Security-Policy"]
        digest = base64.b64encode(hashlib.sha256(INLINE.encode()).digest()).decode()
        directives = dict(d.split(" ", 1) for d in policy.split("; "))
        assert directives["script-src"] == f"'self' 'sha256-{digest}'"
        assert directives["style-src"].startswith("'self' 'unsafe-inline'")
        assert directives["frame-ancestors"] == "'none'"
        assert directives["object-src"] == "'none'"

    @pytest.mark.parametrize("path", ["/chat", "/sessions/agent:main:main", "/a/b/c/"])
    async def test_a_browsers_page_route_gets_the_page(self, client: Client, path: str) -> None:
        response = await client.get(path, headers={"Accept": HTML})
        assert response.status == 200
        assert 'src="/assets/index-1.js"' in await response.text()

    async def test_an_unchanged_page_is_a_304(self, client: Client) -> None:
        etag = (await client.get("/")).headers["ETag"]
        again = await client.get("/", headers={"If-None-Match": etag})
        assert again.status == 304


class TestFiles:
    @pytest.mark.parametrize(
        ("path", "content_type", "body"),
        [
            ("/assets/index-1.js", "text/javascript; charset=utf-8", b"export {};"),
            ("/assets/app.css", "text/css; charset=utf-8", b"body{}"),
            ("/favicon.svg", "image/svg+xml", b"<svg/>"),
            ("/manifest.webmanifest", "application/manifest+json; charset=utf-8", b"{}"),
            # a chunk linked relative to a deep route's URL is the build's own
            ("/chat/main/assets/index-1.js", "text/javascript; charset=utf-8", b"export {};"),
            # a link that stays inside the build
            ("/assets/inside.js", "text/javascript; charset=utf-8", b"export {};"),
        ],
    )
    async def test_files_are_served_with_their_type(
        self, client: Client, path: str, content_type: str, body: bytes
    ) -> None:
        response = await client.get(path)
        assert response.status == 200
        assert response.headers["Content-Type"] == content_type
        assert await response.read() == body

    @pytest.mark.parametrize(
        "path",
        [
            "/assets/missing.js",  # a missing file is a 404 even for a browser
            "/assets/escape.js",  # a link out of the build
            "/assets/..%2F..%2Foutside.txt",
            "/%2e%2e/outside.txt",
            "/assets/%00.js",
        ],
    )
    async def test_nothing_outside_the_build_and_no_listing(
        self, client: Client, path: str
    ) -> None:
        response = await client.get(path, headers={"Accept": "*/*"})
        assert response.status == 404
        assert await response.read() == NOT_FOUND

    @pytest.mark.parametrize("path", ["/.env", "/assets"])  # a dot file; a directory
    async def test_a_dot_file_or_a_directory_is_a_page_route(
        self, client: Client, path: str
    ) -> None:
        """Neither is served (nor listed): a path that names no file the build serves is a
        route of the app, the page for whoever takes HTML (`*/*` does), a 404 for the rest."""
        response = await client.get(path, headers={"Accept": "*/*"})
        body = await response.text()
        assert response.status == 200 and "<openclaw-app>" in body and "SECRET" not in body
        response = await client.get(path, headers={"Accept": "application/json"})
        assert (response.status, await response.read()) == (404, NOT_FOUND)

    @pytest.mark.parametrize(
        "accept",
        ["application/json", "text/html;q=0", "text/plain, */*;q=0.5, text/html;q=0", '"a,b'],
    )
    async def test_a_route_asked_for_by_a_non_browser_is_a_json_404(
        self, client: Client, accept: str
    ) -> None:
        """As on OpenClaw, a route is the page only for an Accept that takes HTML: not one that
        names other types, refuses HTML (a type named beats `*/*`) or does not parse."""
        response = await client.get("/v2/nope", headers={"Accept": accept})
        assert response.status == 404
        assert await response.read() == NOT_FOUND

    @pytest.mark.parametrize(
        "accept", [None, "", "*/*", "text/*", "text/html;charset=UTF-8", "application/xhtml+xml"]
    )
    async def test_a_route_asked_for_with_any_accept_taking_html_is_the_page(
        self, client: Client, accept: str | None
    ) -> None:
        """OpenClaw's gateway answers a page route with the app for no Accept, `*/*` (what a
        `fetch` sends) or one taking HTML. Its UI checks that its page is still there with
        `fetch(location.href, {method: "HEAD"})` before it reloads; a 404 there went to the
        console (`GET /settings/connection 404`) and stopped the reload."""
        headers = {} if accept is None else {"Accept": accept}
        response = await client.head(
            "/settings/connection", headers=headers, skip_auto_headers=["Accept"]
        )
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        response = await client.get(
            "/settings/connection", headers=headers, skip_auto_headers=["Accept"]
        )
        assert 'src="/assets/index-1.js"' in await response.text()

    async def test_other_routes_still_answer(self, client: Client) -> None:
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/metrics")).status == 401

    async def test_other_methods_are_refused(self, client: Client) -> None:
        response = await client.post("/assets/index-1.js", data=b"x")
        assert response.status == 405
        assert response.headers["Allow"] == "GET, HEAD"

    async def test_the_built_in_ui_is_not_served(self, client: Client) -> None:
        response = await client.get("/ui/app.js", headers={"Accept": "*/*"})
        assert response.status == 404


class TestBootstrapConfig:
    """OpenClaw's UI fetches `/control-ui-config.json` with the gateway token (else its
    console shows the 404 and it runs on its defaults)."""

    @pytest.fixture
    async def authed(
        self, aiohttp_client: AiohttpClient, make_config: MakeConfig, build: Path
    ) -> Client:
        config = make_config(
            json.dumps(
                {
                    "gateway": {
                        "auth": {"mode": "token", "token": "ui-token"},
                        "controlUi": {"root": str(build)},
                    },
                    "agents": {"list": [{"id": "ops", "name": "Operations", "default": True}]},
                }
            )
        )
        return await aiohttp_client(create_app(config))

    @pytest.mark.parametrize(
        "path",
        [
            "/control-ui-config.json",
            "/__openclaw__/control-ui-config.json",
            "/__openclaw/control-ui-config.json",
        ],
    )
    async def test_with_the_token_it_is_the_uis_settings(self, authed: Client, path: str) -> None:
        response = await authed.get(path, headers={"Authorization": "Bearer ui-token"})
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-cache"
        assert await response.json() == {
            "basePath": "",
            "assistantName": "Operations",
            "assistantAvatar": None,
            "assistantAvatarSource": None,
            "assistantAvatarStatus": None,
            "assistantAvatarReason": None,
            "assistantAgentId": "ops",
            "embedSandbox": "scripts",
            "allowExternalEmbedUrls": False,
            "automaticallyFetchFavicons": False,
            "communityInvite": False,
            "terminalEnabled": False,
            "cliAgentsEnabled": False,
            "pluginAssetsRequireAuth": True,
            "pluginFrameGrants": [],
        }

    @pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
    async def test_without_the_token_it_is_a_401(
        self, authed: Client, headers: dict[str, str]
    ) -> None:
        response = await authed.get("/control-ui-config.json", headers=headers)
        assert response.status == 401
        assert (await response.json())["error"]["type"] == "unauthorized"

    async def test_only_get_and_head(self, authed: Client) -> None:
        auth = {"Authorization": "Bearer ui-token"}
        head = await authed.head("/control-ui-config.json", headers=auth)
        assert (head.status, await head.read()) == (200, b"")
        response = await authed.post("/control-ui-config.json", headers=auth, data=b"{}")
        assert response.status == 405

    async def test_not_served_with_the_built_in_ui(
        self, aiohttp_client: AiohttpClient, make_config: MakeConfig
    ) -> None:
        client = await aiohttp_client(create_app(make_config()))
        response = await client.get("/control-ui-config.json")
        assert (response.status, await response.read()) == (404, NOT_FOUND)


class TestChanges:
    async def test_a_build_that_lost_its_page_is_a_503(self, client: Client, build: Path) -> None:
        os.remove(build / "index.html")
        response = await client.get("/", headers={"Accept": HTML})
        assert response.status == 503
        body = await response.json()
        assert body["error"]["message"] == (
            "The Control UI build in gateway.controlUi.root has no index.html."
        )
        # A build being written again (a bundler empties its output directory first) has
        # its page back in seconds: a monitor or `curl --retry` is told when to ask again.
        assert response.headers["Retry-After"] == "1"

    async def test_a_page_that_cannot_be_read_is_a_503_to_ask_again(
        self, client: Client, build: Path
    ) -> None:
        (build / "index.html").write_bytes(b"<html>\xff half written")
        response = await client.get("/", headers={"Accept": HTML})
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        body = await response.json()
        assert (
            body["error"]["message"] == "The index.html in gateway.controlUi.root cannot be read."
        )

    async def test_disabled_serves_nothing(
        self, aiohttp_client: AiohttpClient, make_config: MakeConfig, build: Path
    ) -> None:
        text = json.dumps({"gateway": {"controlUi": {"root": str(build), "enabled": False}}})
        client = await aiohttp_client(create_app(make_config(text)))
        for path in ("/", "/assets/index-1.js", "/chat"):
            assert (await client.get(path, headers={"Accept": HTML})).status == 404


class TestBasePath:
    """`gateway.controlUi.basePath` (OpenClaw's): the build under `/openclaw/`, its page stamped
    with that path and its links under it; nothing of it at `/` but the browser's icon, and the
    gateway's own paths and the WebSocket where they were."""

    @pytest.fixture
    async def based(
        self, aiohttp_client: AiohttpClient, make_config: MakeConfig, build: Path
    ) -> Client:
        config = make_config(
            json.dumps(
                {
                    "gateway": {
                        "auth": {"mode": "token", "token": "ui-token"},
                        "controlUi": {"root": str(build), "basePath": "/openclaw/"},
                        "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
                    }
                }
            )
        )
        return await aiohttp_client(create_app(config))

    @pytest.mark.parametrize("path", ["/openclaw/", "/openclaw/chat", "/openclaw/a/b/"])
    async def test_the_page_is_under_the_base_path_stamped_with_it(
        self, based: Client, path: str
    ) -> None:
        response = await based.get(path, headers={"Accept": HTML})
        assert response.status == 200
        page = await response.text()
        stamp = 'data-openclaw-control-ui-base-path="/openclaw"'
        assert f'<html {stamp} data-openclaw-terminal-enabled="false" lang="en">' in page
        assert 'src="/openclaw/assets/index-1.js"' in page
        assert 'href="/openclaw/assets/app.css"' in page
        assert 'href="/openclaw/favicon.svg"' in page

    @pytest.mark.parametrize(
        ("path", "body"),
        [
            ("/openclaw/assets/index-1.js", b"export {};"),
            ("/openclaw/chat/main/assets/index-1.js", b"export {};"),
            ("/openclaw/favicon.svg", b"<svg/>"),
        ],
    )
    async def test_files_are_under_the_base_path(
        self, based: Client, path: str, body: bytes
    ) -> None:
        response = await based.get(path)
        assert (response.status, await response.read()) == (200, body)

    async def test_the_base_path_itself_redirects_to_its_page_keeping_the_query(
        self, based: Client
    ) -> None:
        response = await based.get("/openclaw?session=x", allow_redirects=False)
        assert response.status == 302
        assert response.headers["Location"] == "/openclaw/?session=x"

    @pytest.mark.parametrize(
        "path", ["/", "/chat", "/assets/index-1.js", "/favicon.svg", "/ui/app.js", "/openclawx"]
    )
    async def test_nothing_of_it_outside_the_base_path(self, based: Client, path: str) -> None:
        response = await based.get(path, headers={"Accept": HTML})
        assert (response.status, await response.read()) == (404, NOT_FOUND)

    async def test_the_browsers_icon_at_the_root_is_the_builds(
        self, based: Client, build: Path
    ) -> None:
        # A browser asks `/favicon.ico` whatever the page links; a build without one: a 404.
        response = await based.get("/favicon.ico")
        assert (response.status, await response.read()) == (404, NOT_FOUND)
        (build / "favicon.ico").write_bytes(b"\x00\x00\x01\x00")
        response = await based.get("/favicon.ico")
        assert (response.status, await response.read()) == (200, b"\x00\x00\x01\x00")
        assert response.headers["Content-Type"] == "image/x-icon"

    async def test_its_settings_are_under_the_base_path(self, based: Client) -> None:
        auth = {"Authorization": "Bearer ui-token"}
        for path in (
            "/openclaw/control-ui-config.json",
            "/openclaw/__openclaw/control-ui-config.json",
        ):
            response = await based.get(path, headers=auth)
            assert response.status == 200, path
            assert (await response.json())["basePath"] == "/openclaw"
        # OpenClaw's default-namespace alias is for a UI at `/` only.
        for path in ("/control-ui-config.json", "/__openclaw__/control-ui-config.json"):
            response = await based.get(path, headers=auth)
            assert response.status == 404, path

    async def test_the_gateway_s_own_paths_and_the_websocket_stay_where_they_are(
        self, based: Client
    ) -> None:
        assert (await based.get("/healthz")).status == 200
        assert (await based.get("/readyz")).status == 200
        assert (await based.get("/metrics")).status == 401
        assert (await based.get("/v1/models")).status == 401
        async with based.ws_connect("/openclaw") as ws:  # where OpenClaw's UI connects
            challenge = await ws.receive_json(timeout=5)
            assert challenge["event"] == "connect.challenge"

    async def test_a_reload_moves_it(
        self, aiohttp_client: AiohttpClient, make_config: MakeConfig, build: Path
    ) -> None:
        config = make_config(json.dumps({"gateway": {"controlUi": {"root": str(build)}}}))
        app = create_app(config)
        client = await aiohttp_client(app)
        assert (await client.get("/", headers={"Accept": HTML})).status == 200
        state = app[STATE]
        control_ui = attrs.evolve(state.config.gateway.control_ui, base_path="/ops")
        state.config = attrs.evolve(
            state.config, gateway=attrs.evolve(state.config.gateway, control_ui=control_ui)
        )
        assert (await client.get("/", headers={"Accept": HTML})).status == 404
        page = await (await client.get("/ops/", headers={"Accept": HTML})).text()
        assert 'data-openclaw-control-ui-base-path="/ops"' in page


class TestResolveFuzz:
    @fuzz(300)
    @given(
        rel=st.lists(
            st.one_of(
                st.sampled_from(["..", ".", "", "assets", "escape.js", "index-1.js", ".env"]),
                st.text(max_size=12),
            ),
            max_size=6,
        ).map("/".join)
    )
    def test_any_path_names_a_file_inside_the_build_or_none(
        self, module_build: Path, rel: str
    ) -> None:
        root = str(module_build)
        found = resolve(root, rel)
        if found is not None:
            assert os.path.commonpath((root, found)) == root
            assert os.path.isfile(found)
            assert not os.path.basename(found).startswith(".")
