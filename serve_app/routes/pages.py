"""The pages people look at: the operations dashboard and the three terminals of the demo.

Plain HTML, CSS and JavaScript files from `serve_app/web/`, served as they are: no
build step and nothing fetched from elsewhere, so the pages work with no network.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from domain.errors import DomainError
from serve_app.deps import services
from serve_app.services import Services

router = APIRouter(include_in_schema=False)

# The files a browser may fetch, with their media types; nothing else of the folder is served.
ASSETS = {
    "common.js": "text/javascript; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "terminals.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The pages learn whether the platform runs in dev mode (dev tokens, `?token=`) from this
# attribute of their <body>.
DEV_MODE_MARK = b'data-dev-mode="false"'


@lru_cache(maxsize=16)
def _file(name: str) -> bytes:
    return resources.files("serve_app").joinpath("web", name).read_bytes()


def _page(name: str, request: Request, app: Services) -> Response:
    body = _file(name)
    if app.settings.dev_mode:
        body = body.replace(DEV_MODE_MARK, b'data-dev-mode="true"', 1)
    return _send(body, "text/html; charset=utf-8", request, _policy(app))


def _policy(app: Services) -> str:
    # Scripts and styles come from this origin only, so text from the API (a merchant's
    # name) can never run; the terminals pay at the sandbox, the one other origin.
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {app.settings.sandbox_url}; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def _send(body: bytes, media_type: str, request: Request, policy: str | None = None) -> Response:
    tag = '"' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"'
    # `no-cache`: the browser checks the tag on every load, so a new file shows at once.
    headers = {
        "ETag": tag,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        # A token given in the address (`?token=` in dev mode) must not travel on.
        "Referrer-Policy": "no-referrer",
    }
    if policy:
        headers["Content-Security-Policy"] = policy
    if request.headers.get("if-none-match") == tag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/dashboard")
async def dashboard(request: Request, app: Services = Depends(services)) -> Response:
    return _page("dashboard.html", request, app)


@router.get("/terminals")
async def terminals(request: Request, app: Services = Depends(services)) -> Response:
    return _page("terminals.html", request, app)


@router.get("/web/{name}")
async def asset(name: str, request: Request) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise DomainError("asset_not_found", "no such file", name=name)
    return _send(_file(name), media_type, request)
