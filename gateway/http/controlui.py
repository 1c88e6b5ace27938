"""The Control UI: a browser page at `/` and its files at `/ui/<name>`.

The page is plain HTML, CSS and ES modules shipped as package data (`gateway/ui/`), no build
step. It talks to the gateway only over the WebSocket protocol, as any operator client does;
these routes serve files and nothing else, and need no auth: the files hold no secret, and
every call the page makes is authenticated on the WebSocket.

`gateway.controlUi.enabled` is read per request, so a reload turns the page on or off.
With `gateway.controlUi.root` set, `/` and every path no other route takes serve that directory's
build instead (gateway/http/controlui_root.py), and these files are not served.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from typing import Final

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


def register(app: web.Application) -> None:
    add_route(app, "/", index)
    add_route(app, "/ui/{name}", asset)


async def index(request: web.Request) -> web.StreamResponse:
    return await _serve(request, INDEX)


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name == INDEX and request.app[STATE].config.gateway.control_ui.root is None:
        return not_found()  # one URL for the page
    return await _serve(request, name)


async def unrouted(request: web.Request) -> web.StreamResponse:
    """The last route, taking any path no other takes: the configured build's file or page
    route, else a JSON 404 like the router's own (but with our Expect handling)."""
    gateway = request.app[STATE].config.gateway
    if gateway.control_ui.root is None or not gateway.control_ui_enabled:
        return not_found()
    return await controlui_root.serve(request, gateway.control_ui.root)


async def _serve(request: web.Request, name: str) -> web.StreamResponse:
    gateway = request.app[STATE].config.gateway
    if not gateway.control_ui_enabled:
        return not_found()
    if gateway.control_ui.root is not None:
        return await controlui_root.serve(request, gateway.control_ui.root)
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
