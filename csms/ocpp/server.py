"""The OCPP-J websocket endpoint: handshake (charger id, HTTP Basic auth, subprotocol), then messages."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import WebSocket
from sqlalchemy import select
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocketDisconnect

from csms.charging.service import ChargingService
from csms.db.models import Charger
from csms.ocpp.adapter import ProtocolAdapter
from csms.ocpp.registry import ChargerConnection, ConnectionRegistry
from csms.ocpp.rpc import ConnectionGone, RpcEndpoint
from csms.ocpp.schemas import SUBPROTOCOLS
from csms.ocpp.v16 import V16Adapter
from csms.ocpp.v201 import V201Adapter
from csms.security import PasswordVerifier, client_certificate_cn
from csms.server_config import websocket_frame_cap
from csms.settings import Settings

log = logging.getLogger("csms.ocpp.server")

CHARGER_ID = re.compile(r"^[A-Za-z0-9._~\-@#*+]{1,48}$")
# The server's preference order, whatever order the charger offers them in.
PREFERRED_SUBPROTOCOLS = ("ocpp2.0.1", "ocpp1.6")
ADAPTERS: dict[str, type[ProtocolAdapter]] = {"1.6": V16Adapter, "2.0.1": V201Adapter}


@dataclass
class OcppContext:
    settings: Settings
    service: ChargingService
    registry: ConnectionRegistry
    verifier: PasswordVerifier


class WebSocketTransport:
    """Serialises writes to one websocket: replies and satwatt's calls come from different tasks."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._lock = asyncio.Lock()

    async def send_text(self, text: str) -> None:
        async with self._lock:
            try:
                await self.websocket.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:  # closed under our feet
                raise ConnectionGone(str(exc)) from None

    async def close(self, code: int, reason: str) -> None:
        async with self._lock:
            await self.websocket.close(code=code, reason=reason)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, separator, password = decoded.partition(":")
    return (user, password) if separator else None


def choose_subprotocol(offered: list[str]) -> str | None:
    return next((p for p in PREFERRED_SUBPROTOCOLS if p in offered), None)


async def _deny(websocket: WebSocket, status: int, reason: str) -> None:
    headers = {"WWW-Authenticate": 'Basic realm="satwatt OCPP", charset="UTF-8"'} if status == 401 else {}
    await websocket.send_denial_response(
        PlainTextResponse(reason + "\n", status_code=status, headers=headers)
    )


async def _admit(context: OcppContext, websocket: WebSocket, charger_id: str) -> tuple[bool, bool]:
    """Check the charger id and its credentials; returns (admitted, lenient).

    A refusal is answered 401 and logged at INFO with its reason: chargers that are not (yet) registered
    or carry an old password knock all day, which is not an error of satwatt's.

    A charger proves who it is with a client certificate whose CN is its id (OCPP security profile 3;
    the TLS handshake already checked the certificate against CSMS_TLS_CLIENT_CA), or with HTTP Basic
    auth (profiles 1 and 2). A certificate naming another charger is refused whatever else is sent.
    """
    settings = context.settings
    certificate_cn = client_certificate_cn(websocket.scope)
    if certificate_cn is not None and certificate_cn != charger_id:
        log.info("%s: refused, its client certificate names another charger", charger_id)
        await _deny(websocket, 401, "the client certificate is not this charger's")
        return False, False
    async with context.service.db() as db:
        charger = await db.scalar(select(Charger).where(Charger.id == charger_id))
    if charger is None or not charger.registered:
        if not settings.allow_unknown_chargers:
            log.info("%s: refused, unknown charger", charger_id)
            await _deny(websocket, 401, "unknown charger")
            return False, False
        return True, bool(charger and charger.lenient)
    if certificate_cn is not None:
        return True, charger.lenient
    if settings.require_charger_certificate:
        log.info("%s: refused, no client certificate", charger_id)
        await _deny(websocket, 401, "a client certificate is required")
        return False, False
    if charger.password_hash is None:
        if settings.require_charger_password:
            log.info("%s: refused, it has no password (CSMS_REQUIRE_CHARGER_PASSWORD)", charger_id)
            await _deny(websocket, 401, "this charger has no password set; set one in satwatt")
            return False, False
        return True, charger.lenient
    credentials = basic_credentials(websocket.headers.get("authorization"))
    ok, check = False, None
    if credentials is not None and credentials[0] == charger_id:
        ok, check = await context.verifier.verify(
            charger_id, credentials[1], charger.password_hash, charger.password_check
        )
    if not ok:
        log.info("%s: refused, wrong or missing password", charger_id)
        await _deny(websocket, 401, "wrong or missing credentials")
        return False, False
    if check is not None:
        await context.service.remember_password_check(charger_id, check)
    return True, charger.lenient


async def ocpp_endpoint(context: OcppContext, websocket: WebSocket, charger_id: str) -> None:
    if not CHARGER_ID.match(charger_id):
        log.info("%r: refused, not a valid charge point id (404)", charger_id[:64])
        await _deny(websocket, 404, "invalid charge point id")
        return
    admitted, lenient = await _admit(context, websocket, charger_id)
    if not admitted:
        return
    offered = list(websocket.scope.get("subprotocols", []))
    subprotocol = choose_subprotocol(offered)
    if subprotocol is None:
        # OCPP-J: complete the handshake without a Sec-WebSocket-Protocol header, then close.
        log.warning("%s: no supported OCPP subprotocol offered (%s); closing", charger_id, offered or "none")
        await websocket.accept()
        await websocket.close(code=1002, reason="no supported OCPP subprotocol (ocpp2.0.1, ocpp1.6)")
        return
    await websocket.accept(subprotocol=subprotocol)
    version = SUBPROTOCOLS[subprotocol]
    settings = context.settings
    adapter = ADAPTERS[version](
        charger_id,
        context.service,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        meter_sample_interval_s=settings.meter_sample_interval_s,
        lenient=lenient,
    )
    transport = WebSocketTransport(websocket)
    rpc = RpcEndpoint(
        transport,
        version,
        adapter.handle,
        charger_id=charger_id,
        inbound_actions=adapter.inbound_actions,
        max_message_bytes=settings.ocpp_max_message_bytes,
        call_timeout_s=settings.ocpp_call_timeout_s,
        lenient=lenient,
    )
    adapter.rpc = rpc
    client = websocket.client
    remote = f"{client.host}:{client.port}" if client else None
    connection = ChargerConnection(charger_id, version, adapter, rpc, transport, remote)
    if not await context.registry.register(connection):
        return  # closed: another satwatt process took the charger over while this one claimed it
    await context.service.charger_connected(charger_id, version, remote)
    log.info("%s: connected with OCPP %s from %s", charger_id, version, remote)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                if message.get("code") == 1009:
                    log.warning(
                        "%s: connection closed with 1009: a frame exceeded the hard cap of %d bytes "
                        "(4 x CSMS_OCPP_MAX_MESSAGE_BYTES, at least 1 MiB)",
                        charger_id,
                        websocket_frame_cap(settings),
                    )
                break
            connection.last_message_at = datetime.now(UTC)
            text = message.get("text")
            if text is None:
                log.warning("%s: binary frame ignored (OCPP-J uses text frames)", charger_id)
                continue
            await rpc.receive(text)
    except (WebSocketDisconnect, ConnectionGone):
        pass
    finally:
        await rpc.close()
        if context.registry.unregister(connection):
            await context.service.charger_disconnected(charger_id, connection.last_message_at)
            log.info("%s: disconnected", charger_id)
