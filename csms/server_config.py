"""How satwatt's ASGI app is served by uvicorn: one place for the websocket, TLS and connection options."""

from __future__ import annotations

import ssl
from typing import Any

import uvicorn

from csms.connection_guard import HandshakeGuard, guarded_protocols
from csms.settings import Settings
from csms.ws_logging import install_websocket_log_filters


def websocket_frame_cap(settings: Settings) -> int:
    """The hard cap on a websocket frame: 4 x CSMS_OCPP_MAX_MESSAGE_BYTES, at least 1 MiB. Frames
    between CSMS_OCPP_MAX_MESSAGE_BYTES and this cap get a CALLERROR; a larger one closes the connection
    with 1009 (message too big) before it is read into memory."""
    return max(4 * settings.ocpp_max_message_bytes, 1 << 20)


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration for ``settings`` (``overrides`` for tests and the demo).

    Connections that do not finish their handshake in time are closed, and bounded per client address,
    by :mod:`csms.connection_guard` (its guard is kept as ``app.state.handshake_guard``).
    """
    install_websocket_log_filters()  # an invalid UTF-8 frame: one WARNING line, not an ERROR traceback
    guard = HandshakeGuard(settings.handshake_timeout_s, settings.max_pending_connections_per_address)
    http_protocol, ws_protocol = guarded_protocols(guard)
    state = getattr(app, "state", None)
    if state is not None:
        state.handshake_guard = guard
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": http_protocol,
        "ws": ws_protocol,
        "ws_max_size": websocket_frame_cap(settings),
        "ws_ping_interval": settings.ocpp_ping_interval_s or None,
        "ws_ping_timeout": settings.ocpp_ping_interval_s or None,
        "log_level": settings.log_level.lower(),
        "log_config": None,
        "ssl_certfile": str(settings.tls_cert) if settings.tls_cert else None,
        "ssl_keyfile": str(settings.tls_key) if settings.tls_key else None,
        "access_log": False,
        "lifespan": "on",
    }
    if settings.tls_client_ca is not None:
        # OCPP security profile 3: a charger may present a client certificate signed by this CA (it is
        # verified in the TLS handshake); optional at the TLS level so that API clients and profile-2
        # chargers (password over TLS) still connect, and the OCPP endpoint decides per charger
        options["ssl_ca_certs"] = str(settings.tls_client_ca)
        options["ssl_cert_reqs"] = ssl.CERT_OPTIONAL
    options.update(overrides)
    return uvicorn.Config(app, **options)
