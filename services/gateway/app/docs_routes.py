"""``GET /openapi.json`` (the aggregated document, ``apidoc.py``) and ``GET /docs`` (Swagger UI).

Swagger UI 5.25.3 (Apache-2.0, renders OpenAPI 3.1) is served from the ``swagger-ui-py`` wheel's
static files (pinned in ``pyproject.toml``), never from a CDN. "Authorize" takes an API key as
the bearer and keeps it in the browser's local storage; "Try it out" sends requests to this
gateway. These paths are public, like ``/health`` (``guard.OPEN_PATHS``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import swagger_ui
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from nexus_kit import NotFoundError

from .apidoc import ApiDocument

if TYPE_CHECKING:
    from .state import GatewayState

SWAGGER_UI_VERSION = "5.25.3"
STATIC = Path(swagger_ui.__file__).parent / "static"
ASSETS = {
    "swagger-ui.css": "text/css",
    "index.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
    "oauth2-redirect.html": "text/html",
}
PUBLIC_PATHS = frozenset(
    {"/openapi.json", "/docs", "/docs/init.js"} | {f"/docs/{name}" for name in ASSETS}
)
# FastAPI's own document and viewers, replaced by the ones here.
_FASTAPI_DOCS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
_CACHE = {"cache-control": "public, max-age=86400"}
_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Nexus gateway API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="stylesheet" href="/docs/index.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""
_INIT = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: true,
    tryItOutEnabled: true,
    displayRequestDuration: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "BaseLayout"
  });
};
"""

router = APIRouter(include_in_schema=False)


def install_docs(app: FastAPI, state: GatewayState) -> None:
    """Serve the aggregated document and Swagger UI instead of FastAPI's own."""
    app.router.routes[:] = [
        r for r in app.router.routes if getattr(r, "path", None) not in _FASTAPI_DOCS
    ]  # in place: the dispatcher holds this list
    app.include_router(router)
    app.state.apidoc = ApiDocument(
        lambda: state.table, lambda: state.control, app.openapi, state.settings.service_version
    )


def _document(request: Request) -> ApiDocument:
    document: ApiDocument = request.app.state.apidoc
    return document


@router.get("/openapi.json", operation_id="gateway.openapi")
async def openapi(request: Request) -> Response:
    body = await _document(request).body()
    return Response(body, media_type="application/json", headers={"cache-control": "no-cache"})


@router.get("/docs", operation_id="gateway.docs")
async def docs() -> HTMLResponse:
    return HTMLResponse(_PAGE)


@router.get("/docs/init.js", operation_id="gateway.docs.init")
async def docs_init() -> Response:
    return Response(_INIT, media_type="text/javascript")


@router.get("/docs/{asset}", operation_id="gateway.docs.asset")
async def docs_asset(asset: str) -> FileResponse:
    media_type = ASSETS.get(asset)
    if media_type is None:
        raise NotFoundError(f"No such documentation asset: {asset[:64]!r}.")
    return FileResponse(STATIC / asset, media_type=media_type, headers=_CACHE)
