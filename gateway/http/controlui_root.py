"""An operator's Control UI build served at `/` (or its base path) instead of the built-in UI
(`gateway.controlUi.root`): OpenClaw's own Control UI (`dist/control-ui` in the `openclaw` npm
package) or any other single-page app that talks the WebSocket protocol.

Served as OpenClaw serves it (its src/gateway/control-ui.ts): the files of the directory by
their path; for a page route of the app (a path that is no file, asked for with an Accept that
takes HTML, as OpenClaw reads it) the app's `index.html`, which then routes on the client.
`index.html` gets the attributes OpenClaw's gateway stamps on its `<html>` (the base path,
terminal off, no build id, as OpenClaw does for a configured root) and its `./assets/` and root
icon links made absolute (under the base path), so that a deep route loads the same files. Its
inline scripts are allowed by their hashes in a Content-Security-Policy that is OpenClaw's for
this page (it needs inline styles, which the built-in UI's policy forbids).

Nothing outside the directory is served: no `..` or dot-file segment (such a path is a page
route), and the path with its links resolved must stay inside the directory (a link inside it
that points out is a 404). No directory is listed. Like the built-in UI's files these need no
auth: a build holds no secret, and everything the app does goes through the authenticated
WebSocket. The directory is read per request, so a new build (or a reload that changes `root`)
applies to the next request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
from typing import Final

from aiohttp import web

from gateway.appkeys import STATE
from gateway.http.common import authenticate, error_answer
from gateway.http.media_range import accepts_html_page
from gateway.http.openai_wire import RequestError
from gateway.responses import error_response, json_response, method_not_allowed, not_found

INDEX: Final = "index.html"
# Where OpenClaw's UI looks for its settings under its base path: the path and OpenClaw's
# older one; at `/` also the one its `/__openclaw__/` entry asks for.
BOOTSTRAP_PATHS: Final = frozenset(
    {"/control-ui-config.json", "/__openclaw/control-ui-config.json"}
)
ROOT_BOOTSTRAP_PATH: Final = "/__openclaw__/control-ui-config.json"

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".map": "application/json; charset=utf-8",
    ".webmanifest": "application/manifest+json; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
}
FALLBACK_CONTENT_TYPE: Final = "application/octet-stream"

# OpenClaw's policy for its Control UI (buildControlUiCspHeader), the inline script hashes
# added per page. It allows inline styles, Google's fonts and images from anywhere: that UI
# needs them, and it is the policy OpenClaw's own gateway serves the same files with.
_CSP_REST: Final = (
    "style-src 'self' 'unsafe-inline' https://fonts.googleapis.com",
    "img-src 'self' data: blob: https:",
    "media-src 'self' data: blob:",
    "font-src 'self' https://fonts.gstatic.com",
    "worker-src 'self'",
    "connect-src 'self' ws: wss: data: https://api.openai.com https://tweakcn.com",
)
_CSP_HEAD: Final = (
    "default-src 'self'",
    "base-uri 'none'",
    "object-src 'none'",
    "frame-ancestors 'none'",
    "frame-src 'self' http: https:",
)

# The files a build has at its top, linked from index.html as `./name` (OpenClaw's
# CONTROL_UI_ROOT_PUBLIC_ASSETS).
_ROOT_ASSETS: Final = (
    "apple-touch-icon.png",
    "favicon-32.png",
    "favicon.ico",
    "favicon.svg",
    "manifest.webmanifest",
    "sw.js",
)
_ASSETS_DIR: Final = "/assets/"
_INLINE_SCRIPT = re.compile(r"<script(?:\s[^>]*)?>(.*?)</script>", re.IGNORECASE | re.DOTALL)
_SRC_ATTRIBUTE = re.compile(r"\ssrc\s*=", re.IGNORECASE)
_HTML_TAG = re.compile(r"<html\b[^>]*>", re.IGNORECASE)
_BUILD_ID = re.compile(r'\sdata-openclaw-control-ui-build-id="[^"]*"')
_STAMP = ' data-openclaw-control-ui-base-path="{base_path}" data-openclaw-terminal-enabled="false"'


def content_security_policy(inline_script_hashes: list[str]) -> str:
    script = " ".join(["'self'", *(f"'{h}'" for h in inline_script_hashes)])
    return "; ".join((*_CSP_HEAD, f"script-src {script}", *_CSP_REST))


def security_headers(csp: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-cache",
    }


async def serve(request: web.Request, root: str, path: str, base_path: str) -> web.StreamResponse:
    """`path` of the build (the request's path less the base path, "" for `/`)."""
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed("GET, HEAD")
    if path in BOOTSTRAP_PATHS or (path == ROOT_BOOTSTRAP_PATH and not base_path):
        return bootstrap_config(request, base_path)
    # A build's chunks link `./assets/…` relative to the page: under a deep route such as
    # `/chat/main/x` that is `/chat/main/assets/…`, which is the build's `assets/` (as OpenClaw).
    at = path.find(_ASSETS_DIR)
    rel = path[at + 1 :] if at >= 0 else path[1:]
    if rel == "" or rel.endswith("/"):
        rel += INDEX
    extension = os.path.splitext(rel)[1].lower()
    file = resolve(root, rel)
    if file is not None and os.path.basename(file) != INDEX:
        headers = security_headers(content_security_policy([]))
        headers["Content-Type"] = CONTENT_TYPES.get(extension, FALLBACK_CONTENT_TYPE)
        return web.FileResponse(file, headers=headers)
    if file is None and (
        (extension in CONTENT_TYPES and extension != ".html") or not _wants_html(request)
    ):
        return not_found()  # a missing file, or a route asked for by something not a browser
    return await _index(request, root, base_path)


def bootstrap_config(request: web.Request, base_path: str) -> web.StreamResponse:
    """OpenClaw's `/control-ui-config.json` (its control-ui.ts), behind the gateway's auth as
    there: the UI fetches it with the token it connects with, and runs on its defaults
    without it. The assistant is the default agent; OpenClaw's features clawgate does not
    have are off (`terminalEnabled` must match index.html's stamp, or the UI reloads), and so
    are the ones that would make the browser reach third parties unasked (site favicons,
    OpenClaw's community invitation). No `serverVersion`: hello-ok has the gateway's."""
    state = request.app[STATE]
    try:
        authenticate(request, state)
    except RequestError as exc:
        return error_answer(request, exc)
    agent = state.config.agents.default_agent
    settings: dict[str, object] = {
        "basePath": base_path,
        "assistantName": agent.name,
        "assistantAvatar": None,
        "assistantAvatarSource": None,
        "assistantAvatarStatus": None,
        "assistantAvatarReason": None,
        "assistantAgentId": agent.id,
        "embedSandbox": "scripts",
        "allowExternalEmbedUrls": False,
        "automaticallyFetchFavicons": False,
        "communityInvite": False,
        "terminalEnabled": False,
        "cliAgentsEnabled": False,
        "pluginAssetsRequireAuth": True,
        "pluginFrameGrants": [],
    }
    return json_response(settings, headers={"Cache-Control": "no-cache"})


def resolve(root: str, rel: str) -> str | None:
    """The regular file `rel` (a `/`-separated path) names inside `root`, links resolved, or
    None when there is none there (or the path would leave `root`)."""
    parts = rel.split("/")
    if any(part == "" or part.startswith(".") or "\0" in part for part in parts):
        return None
    real = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath((root, real)) != root or not os.path.isfile(real):
        return None
    return real


def _wants_html(request: web.Request) -> bool:
    """Whether a page route gets index.html, as OpenClaw decides it: an Accept that takes HTML,
    `*/*` among them (the app's own `fetch` of its page, a plain curl) or none at all. An API
    client naming other types gets the 404 a missing path gets elsewhere."""
    accept = request.headers.getall("Accept", [])
    return accepts_html_page(", ".join(accept) if accept else None)


# A build being written again (a bundler empties its output directory first, then writes the
# page) has its page back within seconds: a monitor or `curl --retry` is told when to ask.
_ASK_AGAIN = {"Retry-After": "1"}


async def _index(request: web.Request, root: str, base_path: str) -> web.StreamResponse:
    index = resolve(root, INDEX)
    if index is None:
        # The directory was checked when the config was loaded; it has changed since.
        return error_response(
            503,
            "The Control UI build in gateway.controlUi.root has no index.html.",
            "api_error",
            headers=_ASK_AGAIN,
        )
    try:
        text = await asyncio.to_thread(_read_text, index)
    except (OSError, UnicodeDecodeError):
        return error_response(
            503,
            "The index.html in gateway.controlUi.root cannot be read.",
            "api_error",
            headers=_ASK_AGAIN,
        )
    page = prepare_index(text, base_path)
    body = page.encode()
    headers = security_headers(content_security_policy(inline_script_hashes(page)))
    headers["Content-Type"] = CONTENT_TYPES[".html"]
    headers["ETag"] = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    if headers["ETag"] in _etags(request.headers.get("If-None-Match", "")):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers=headers)


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        return file.read()


def prepare_index(html: str, base_path: str = "") -> str:
    """index.html as OpenClaw's gateway serves it from a configured root: its links under the
    base path, which is stamped on `<html>` (the config allows no character HTML would read
    another way in it)."""
    for quote_attr in ('src="./assets/', 'href="./assets/'):
        html = html.replace(quote_attr, quote_attr.replace("./", base_path + "/"))
    for asset in _ROOT_ASSETS:
        for link in (f'href="./{asset}"', f'href="/{asset}"'):
            html = html.replace(link, f'href="{base_path}/{asset}"')
    stamp = _STAMP.format(base_path=base_path)
    return _HTML_TAG.sub(
        lambda m: "<html" + stamp + _BUILD_ID.sub("", m.group(0))[len("<html") :],
        html,
        count=1,
    )


def inline_script_hashes(html: str) -> list[str]:
    """CSP `sha256-…` sources of the page's inline scripts (those without `src`)."""
    hashes = []
    for match in _INLINE_SCRIPT.finditer(html):
        open_tag = match.group(0)[: match.group(0).index(">") + 1]
        if _SRC_ATTRIBUTE.search(open_tag) or not match.group(1):
            continue
        digest = hashlib.sha256(match.group(1).encode()).digest()
        hashes.append("sha256-" + base64.b64encode(digest).decode())
    return hashes


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
