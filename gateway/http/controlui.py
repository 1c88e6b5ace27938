"""The Control UI: a browser page at `/` and its files at `/ui/<name>`.

The page is plain HTML, CSS and ES modules shipped as package data (`gateway/ui/`), no build
step. It talks to the gateway only over the WebSocket protocol, as any operator client does;
these routes serve files and nothing else, and need no auth: the files hold no secret, and
every call the page makes is authenticated on the WebSocket.

`gateway.controlUi.enabled` is read per request, so a reload turns the page on or off.
With `gateway.controlUi.root` set, `/` and every path no other route takes serve that directory's
build instead (gateway/http/controlui_root.py), and these files are not served.

With `gateway.controlUi.basePath` (OpenClaw's, e.g. `/openclaw`) either UI is served under that
path instead, as OpenClaw serves its own (for a proxy that forwards one path to the gateway, or
to leave `/` to something else): the page at `/openclaw/`, the built-in UI's files at
`/openclaw/ui/<name>` (its page links them relative to itself), `/openclaw` a redirect to
`/openclaw/`, and nothing of the UI at `/`. The gateway's own routes (`/v1/*`, the hooks, the
probes, `/metrics`) come first, and the config refuses a base path over or under them; the
WebSocket is answered on any path, so a page under the base path connects to
`ws://host/openclaw` as it is. Read per request too: a reload moves the UI.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from typing import Final
from urllib.parse import quote

import attrs
from aiohttp import web

from gateway.appkeys import STATE
from gateway.edge_http import add_route
from gateway.http import controlui_root
from gateway.responses import method_not_allowed, not_found

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}

# Only our own files run and load: no inline script or style, no framing (clickjacking a page
# that holds an operator token), no plugins, no form posts, no <base> games. `connect-src`
# names ws:/wss: because the page may be pointed at another gateway's URL.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'none';"
    " frame-ancestors 'none'"
)
# Revalidated on every load (the ETag makes that a 304): after an upgrade the browser never
# mixes modules of two versions.
CACHE_CONTROL: Final = "no-cache"


@attrs.frozen
class UiFile:
    body: bytes
    content_type: str
    etag: str


def _load() -> dict[str, UiFile]:
    files: dict[str, UiFile] = {}
    for entry in (importlib.resources.files("gateway") / "ui").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        content_type = CONTENT_TYPES.get(suffix)
        if content_type is None or not entry.is_file():
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[entry.name] = UiFile(body, content_type, etag)
    return files


# Read once: a handful of small files, and a fixed set, so no request can name another path.
FILES: Final = _load()
INDEX: Final = "index.html"
_BROWSER_ICON: Final = "/favicon.ico"
_ICON_CACHE: Final = "max-age=86400"  # asked again a day later at most: there is none


def register(app: web.Application) -> None:
    add_route(app, "/", index)
    add_route(app, "/ui/{name}", asset)


async def index(request: web.Request) -> web.StreamResponse:
    return await _at(request, "/")


async def asset(request: web.Request) -> web.StreamResponse:
    return await _at(request, "/ui/" + request.match_info["name"])


async def unrouted(request: web.Request) -> web.StreamResponse:
    """The last route, taking any path no other takes: under the base path the UI's (the
    configured build's file or page route), else a JSON 404 like the router's own (but with our
    Expect handling)."""
    gateway = request.app[STATE].config.gateway
    base, path = gateway.control_ui.base_path, request.path
    if not gateway.control_ui_enabled or not base:
        return await _at(request, path)
    if path == base:
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed("GET, HEAD")  # what the page's own path answers
        # The page's links and routes are under `base/` (as OpenClaw, the query kept). As
        # sent: decoded, `%0a` or `%00` made the header unsendable and `%23` a fragment.
        query = request.rel_url.raw_query_string
        query = f"?{_as_url_text(query)}" if query else ""
        return web.Response(status=302, headers={"Location": f"{base}/{query}"})
    if path == _BROWSER_ICON:
        # A browser asks the origin's root for its icon whatever the page links (a tab being
        # restored, a page whose head it has not read): the UI's own, not a 404 in its console.
        return await _ui(request, path)
    if not path.startswith(base + "/"):
        return not_found()
    return await _ui(request, path[len(base) :])


# A query's characters that stand in a URL as they are (RFC 3986's `query`, `%` of the escapes
# already there); any other the parser let through (`"`, `<`, `{`) is percent-encoded.
_QUERY_SAFE = "!$&'()*+,;=:@/?%-._~"


def _as_url_text(query: str) -> str:
    return quote(query.encode("utf-8", "surrogateescape"), safe=_QUERY_SAFE)


async def _at(request: web.Request, path: str) -> web.StreamResponse:
    """`path` of the UI when it is served at `/`; under a base path nothing is at `/`."""
    if request.app[STATE].config.gateway.control_ui.base_path:
        return not_found()
    return await _ui(request, path)


async def _ui(request: web.Request, path: str) -> web.StreamResponse:
    """`path` inside the UI (`/`, `/ui/app.js`, a build's `/chat`), whatever its base path."""
    gateway = request.app[STATE].config.gateway
    if not gateway.control_ui_enabled:
        return not_found()
    control_ui = gateway.control_ui
    if control_ui.root is not None:
        return await controlui_root.serve(request, control_ui.root, path, control_ui.base_path)
    if path == "/":
        return await _serve(request, INDEX)
    if path == _BROWSER_ICON:
        # The page links no icon file (`data:,`), yet a browser may still ask for one: no
        # icon, rather than a 404 in its console.
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed("GET, HEAD")
        return web.Response(status=204, headers={"Cache-Control": _ICON_CACHE})
    name = path.removeprefix("/ui/")
    if name in (path, INDEX) or "/" in name:  # not under /ui/, or the page (one URL for it)
        return not_found()
    return await _serve(request, name)


async def _serve(request: web.Request, name: str) -> web.StreamResponse:
    file = FILES.get(name)
    if file is None:
        return not_found()
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed("GET, HEAD")
    headers = {
        "Content-Type": file.content_type,
        "Cache-Control": CACHE_CONTROL,
        "ETag": file.etag,
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    if file.etag in _etags(request.headers.get("If-None-Match", "")):
        return web.Response(status=304, headers=headers)
    return web.Response(body=file.body, headers=headers)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
