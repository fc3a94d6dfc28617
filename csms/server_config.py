"""How satwatt's ASGI app is served by uvicorn: one place for the websocket and TLS options."""

from __future__ import annotations

from typing import Any

import uvicorn

from csms.settings import Settings


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration for ``settings`` (``overrides`` for tests and the demo)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "ws": "websockets-sansio",
        # frames between CSMS_OCPP_MAX_MESSAGE_BYTES and this hard cap get a CALLERROR; above it the
        # websocket layer closes the connection (1009) before the frame is read into memory
        "ws_max_size": max(4 * settings.ocpp_max_message_bytes, 1 << 20),
        "ws_ping_interval": settings.ocpp_ping_interval_s or None,
        "ws_ping_timeout": settings.ocpp_ping_interval_s or None,
        "log_level": settings.log_level.lower(),
        "log_config": None,
        "ssl_certfile": str(settings.tls_cert) if settings.tls_cert else None,
        "ssl_keyfile": str(settings.tls_key) if settings.tls_key else None,
        "access_log": False,
        "lifespan": "on",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)
