"""`GET /ui/`: the dashboard, a single page of static files shipped in the package.

The page is plain HTML, CSS and JavaScript modules from `server/ui/` (no build step, nothing from
a CDN) and talks only to the public API with the key the user pasted. Every answer under `/ui`
(its errors too, and those of the fallback route for paths under `/ui/`) carries a strict
Content-Security-Policy and its companions; API answers are left alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from importlib import resources

import attrs
from aiohttp import web

from jobtracker.server.errors import AddRoute

#: The folder (inside the package) the page's files are read from.
UI_FILES = resources.files("jobtracker.server") / "ui"
#: No inline script or style, nothing from elsewhere: the page's own files and the API only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
}


@attrs.frozen
class Asset:
    """One of the page's files, read once: its bytes, content type and entity tag."""

    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """The page's files by name; only these names are ever served."""
    assets = {}
    for entry in UI_FILES.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _CONTENT_TYPES:
            body = entry.read_bytes()
            tag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            assets[entry.name] = Asset(body, _CONTENT_TYPES[suffix], tag)
    return assets


UI_ASSETS = web.AppKey("jobtracker_ui_assets", dict[str, Asset])


def is_ui_path(path: str) -> bool:
    """Whether a request path belongs to the dashboard."""
    return path == "/ui" or path.startswith("/ui/")


def ui_headers(request: web.Request) -> Mapping[str, str]:
    """The headers an answer to `request` carries: the page's security headers under `/ui`."""
    return SECURITY_HEADERS if is_ui_path(request.path) else {}


async def redirect_to_index(request: web.Request) -> web.StreamResponse:
    """`GET /ui`: the page lives at `/ui/`, where its relative links resolve."""
    raise web.HTTPPermanentRedirect("/ui/")


async def ui_file(request: web.Request) -> web.Response:
    """`GET /ui/` and `GET /ui/{name}`: one of the page's files, revalidated by its ETag."""
    name = request.match_info.get("name") or "index.html"
    asset = request.app[UI_ASSETS].get(name)
    if asset is None:
        raise web.HTTPNotFound()
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers
    )


def add_dashboard(app: web.Application, add: AddRoute) -> None:
    """Register the dashboard's routes (with their security headers) through `add`."""
    app[UI_ASSETS] = load_assets()
    add("GET", "/ui", redirect_to_index, ui_headers)
    add("GET", "/ui/", ui_file, ui_headers)
    add("GET", "/ui/{name}", ui_file, ui_headers)
