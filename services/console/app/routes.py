"""The console's two public endpoints: the page and its assets.

Both are marked public (no bearer at the gateway): a browser cannot send a bearer when it
navigates, and these files hold no data, only the UI code. Every call that reads or changes
anything is made by that code to the gateway's API with the signed-in user's token.
Assets are the files shipped in ``app/static`` (no CDN, no build step), read once at import.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi import Path as PathParam
from fastapi.responses import Response

from nexus_kit import NotFoundError, endpoint_flags

STATIC = Path(__file__).resolve().parent / "static"
PUBLIC = endpoint_flags(public=True)
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
# The page may load only its own files and talk only to its own origin (the gateway).
# ``data:``/``blob:`` carry generated images and speech returned by the API.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: blob:; media-src 'self' data: blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets(directory: Path = STATIC) -> dict[str, Asset]:
    assets: dict[str, Asset] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in TYPES:
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            assets[path.name] = Asset(body, TYPES[path.suffix], etag)
    return assets


ASSETS = load_assets()
router = APIRouter(tags=["console"])
AssetName = Annotated[str, PathParam(max_length=200)]
IfNoneMatch = Annotated[str | None, Header()]


def _serve(asset: Asset, if_none_match: str | None) -> Response:
    # ``no-cache``: the browser keeps a copy but revalidates it (304 when unchanged), so an
    # upgraded console is picked up on the next load.
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if if_none_match == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get("/console", operation_id="console.page", summary="The console UI", openapi_extra=PUBLIC)
async def page(if_none_match: IfNoneMatch = None) -> Response:
    return _serve(ASSETS["index.html"], if_none_match)


@router.get(
    "/console/", operation_id="console.page_slash", summary="Redirect to the console UI",
    openapi_extra=PUBLIC, status_code=308,
)  # fmt: skip
async def page_slash() -> Response:
    # The page loads its files relative to /console; under /console/ they would not resolve.
    return Response(status_code=308, headers={"Location": "/console"})


@router.get(
    "/console/{asset}", operation_id="console.asset", summary="A file of the console UI",
    openapi_extra=PUBLIC,
)  # fmt: skip
async def asset(asset: AssetName, if_none_match: IfNoneMatch = None) -> Response:
    found = ASSETS.get(asset)
    if found is None:
        shown = asset if len(asset) <= 64 else asset[:64] + "..."
        raise NotFoundError(f"The console has no file '{shown}'.", param="asset")
    return _serve(found, if_none_match)
