"""The interactive API documentation (``/docs``: Swagger UI, ``/redoc``: ReDoc) served without a CDN.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so without internet access (a depot, a
single-board computer on a private network) ``/docs`` is a blank page. Here the same pages load those
files from satwatt itself: ``fastapi-offline`` ships their distribution files (Swagger UI: Apache-2.0,
ReDoc: MIT), served under ``/docs/static``. ReDoc's Google fonts are left out.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS_PATH = "/docs/static"
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"


def install(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve Swagger UI at ``docs_url`` and ReDoc at ``redoc_url`` from packaged files.

    The app must be made with ``docs_url=None, redoc_url=None`` (FastAPI's CDN pages off).
    """
    names = (SWAGGER_JS, SWAGGER_CSS, REDOC_JS, FAVICON)
    missing = [name for name in names if not (ASSETS_DIR / name).is_file()]
    if missing:  # a broken install: say so at start-up rather than serve a blank page
        raise RuntimeError(f"API documentation files missing from {ASSETS_DIR}: {', '.join(missing)}")
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-static")
    oauth2_redirect_url = f"{docs_url}/oauth2-redirect"

    def asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{ASSETS_PATH}/{name}"

    def openapi_url(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{app.openapi_url}"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - API",
            swagger_js_url=asset(request, SWAGGER_JS),
            swagger_css_url=asset(request, SWAGGER_CSS),
            swagger_favicon_url=asset(request, FAVICON),
            oauth2_redirect_url=f"{request.scope.get('root_path', '')}{oauth2_redirect_url}",
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url(request),
            title=f"{app.title} - API",
            redoc_js_url=asset(request, REDOC_JS),
            redoc_favicon_url=asset(request, FAVICON),
            with_google_fonts=False,
        )
