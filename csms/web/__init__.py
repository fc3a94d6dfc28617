"""The web pages, server-rendered with no build step: the driver's pages behind the QR sticker
(``/c/{charger}/{connector}``, the session page ``/s/{id}``) and the operator's dashboard
(``/dashboard``). Scripts, styles and images are served from ``/web/``; nothing comes from a CDN."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/web"


def install(app: FastAPI) -> None:
    """Mount the pages and their static files (none of them is part of the REST API's document)."""
    from csms.web import dashboard, driver

    app.include_router(driver.router)
    app.include_router(dashboard.router)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="web-static")
