"""A small test central system built on the ``ocpp`` library's central-system side.

It serves OCPP-J on ``ws://127.0.0.1:PORT/ocpp/{id}`` with subprotocol negotiation (``ocpp2.0.1`` and
``ocpp1.6``) and optional HTTP Basic auth, validates every inbound message against the OCPP schemas (the
library does that), records every CALL it receives (raw, camelCase, with its unique id) and lets a test
send CSMS-initiated calls and wait for conditions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as Cp16
from ocpp.v16 import call_result as r16
from ocpp.v201 import ChargePoint as Cp201
from ocpp.v201 import call_result as r201
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Received:
    cp_id: str
    action: str
    payload: dict[str, Any]
    unique_id: str
    t: float


@dataclass
class DoubleConfig:
    boot_pending: int = 0  # answer the first N BootNotifications with Pending
    boot_rejected: int = 0  # then N with Rejected
    boot_interval: int = 1  # interval sent with Pending/Rejected
    heartbeat_interval: int = 300
    invalid_tags: set[str] = field(default_factory=lambda: {"BLOCKED"})
    passwords: dict[str, str] | None = None  # cp id -> password; None = no auth


class _Recording:
    """Mixin: record each inbound CALL verbatim before the library routes it."""

    double: CsmsDouble

    async def route_message(self, raw_msg: str) -> None:
        try:
            msg = json.loads(raw_msg)
        except ValueError:
            msg = None
        if isinstance(msg, list) and msg and msg[0] == 2:
            self.double._record(self.id, msg[2], msg[3], str(msg[1]))  # type: ignore[attr-defined]
        await super().route_message(raw_msg)  # type: ignore[misc]


class Central16(_Recording, Cp16):
    def __init__(self, cp_id: str, ws: ServerConnection, double: CsmsDouble) -> None:
        super().__init__(cp_id, ws, response_timeout=10)
        self.double = double

    @on("BootNotification")
    def on_boot(self, **kw: Any) -> r16.BootNotification:
        status, interval = self.double._boot_status()
        return r16.BootNotification(current_time=_now(), interval=interval, status=status)

    @on("Heartbeat")
    def on_heartbeat(self) -> r16.Heartbeat:
        return r16.Heartbeat(current_time=_now())

    @on("StatusNotification")
    def on_status(self, **kw: Any) -> r16.StatusNotification:
        return r16.StatusNotification()

    @on("Authorize")
    def on_authorize(self, id_tag: str) -> r16.Authorize:
        return r16.Authorize(id_tag_info={"status": self.double._tag_status(id_tag)})

    @on("StartTransaction")
    def on_start(self, id_tag: str, **kw: Any) -> r16.StartTransaction:
        return r16.StartTransaction(
            transaction_id=next(self.double.tx_ids), id_tag_info={"status": self.double._tag_status(id_tag)}
        )

    @on("StopTransaction")
    def on_stop(self, **kw: Any) -> r16.StopTransaction:
        return r16.StopTransaction(id_tag_info={"status": "Accepted"})

    @on("MeterValues")
    def on_meter(self, **kw: Any) -> r16.MeterValues:
        return r16.MeterValues()

    @on("DataTransfer")
    def on_data(self, **kw: Any) -> r16.DataTransfer:
        return r16.DataTransfer(status="Accepted")

    @on("DiagnosticsStatusNotification")
    def on_diag(self, **kw: Any) -> r16.DiagnosticsStatusNotification:
        return r16.DiagnosticsStatusNotification()

    @on("FirmwareStatusNotification")
    def on_fw(self, **kw: Any) -> r16.FirmwareStatusNotification:
        return r16.FirmwareStatusNotification()


class Central201(_Recording, Cp201):
    def __init__(self, cp_id: str, ws: ServerConnection, double: CsmsDouble) -> None:
        super().__init__(cp_id, ws, response_timeout=10)
        self.double = double

    @on("BootNotification")
    def on_boot(self, **kw: Any) -> r201.BootNotification:
        status, interval = self.double._boot_status()
        return r201.BootNotification(current_time=_now(), interval=interval, status=status)

    @on("Heartbeat")
    def on_heartbeat(self) -> r201.Heartbeat:
        return r201.Heartbeat(current_time=_now())

    @on("StatusNotification")
    def on_status(self, **kw: Any) -> r201.StatusNotification:
        return r201.StatusNotification()

    @on("Authorize")
    def on_authorize(self, id_token: dict[str, Any], **kw: Any) -> r201.Authorize:
        return r201.Authorize(id_token_info={"status": self.double._tag_status(id_token["id_token"])})

    @on("TransactionEvent")
    def on_tx(self, **kw: Any) -> r201.TransactionEvent:
        tok = kw.get("id_token")
        if tok:
            return r201.TransactionEvent(id_token_info={"status": self.double._tag_status(tok["id_token"])})
        return r201.TransactionEvent()

    @on("MeterValues")
    def on_meter(self, **kw: Any) -> r201.MeterValues:
        return r201.MeterValues()

    @on("DataTransfer")
    def on_data(self, **kw: Any) -> r201.DataTransfer:
        return r201.DataTransfer(status="Accepted")

    @on("FirmwareStatusNotification")
    def on_fw(self, **kw: Any) -> r201.FirmwareStatusNotification:
        return r201.FirmwareStatusNotification()

    @on("NotifyReport")
    def on_report(self, **kw: Any) -> r201.NotifyReport:
        return r201.NotifyReport()

    @on("LogStatusNotification")
    def on_log(self, **kw: Any) -> r201.LogStatusNotification:
        return r201.LogStatusNotification()


class CsmsDouble:
    def __init__(self, config: DoubleConfig | None = None) -> None:
        self.config = config or DoubleConfig()
        self.received: list[Received] = []
        self.cps: dict[str, Central16 | Central201] = {}
        self.connections: dict[str, int] = {}
        self.tx_ids = itertools.count(1001)
        self._boots = 0
        self._server: Any = None
        self._changed = asyncio.Event()
        self.port = 0

    # ------------------------------------------------------------------ server
    async def start(self) -> CsmsDouble:
        self._server = await websockets.serve(
            self._on_connect,
            "127.0.0.1",
            0,
            subprotocols=["ocpp2.0.1", "ocpp1.6"],  # type: ignore[list-item]
            process_request=self._auth,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    def _auth(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.config.passwords is None:
            return None
        cp_id = request.path.rstrip("/").rsplit("/", 1)[-1]
        expected = self.config.passwords.get(cp_id)
        header = request.headers.get("Authorization", "")
        token = base64.b64encode(f"{cp_id}:{expected}".encode()).decode()
        if expected is None or header != f"Basic {token}":
            return connection.respond(401, "bad credentials\n")
        return None

    async def _on_connect(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        cp_id = ws.request.path.rstrip("/").rsplit("/", 1)[-1]
        cp: Central16 | Central201
        if ws.subprotocol == "ocpp1.6":
            cp = Central16(cp_id, ws, self)
        elif ws.subprotocol == "ocpp2.0.1":
            cp = Central201(cp_id, ws, self)
        else:
            await ws.close(1002, "no subprotocol")
            return
        self.cps[cp_id] = cp  # the newest connection wins
        self.connections[cp_id] = self.connections.get(cp_id, 0) + 1
        self._pulse()
        with contextlib.suppress(ConnectionClosed):
            await cp.start()

    # ------------------------------------------------------------------ recording and waiting
    def _record(self, cp_id: str, action: str, payload: dict[str, Any], unique_id: str) -> None:
        self.received.append(Received(cp_id, action, payload, unique_id, asyncio.get_running_loop().time()))
        self._pulse()

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _boot_status(self) -> tuple[str, int]:
        self._boots += 1
        if self._boots <= self.config.boot_pending:
            return "Pending", self.config.boot_interval
        if self._boots <= self.config.boot_pending + self.config.boot_rejected:
            return "Rejected", self.config.boot_interval
        return "Accepted", self.config.heartbeat_interval

    def _tag_status(self, tag: str) -> str:
        return "Invalid" if tag in self.config.invalid_tags else "Accepted"

    def messages(self, action: str | None = None, cp_id: str | None = None) -> list[Received]:
        return [
            m
            for m in self.received
            if (action is None or m.action == action) and (cp_id is None or m.cp_id == cp_id)
        ]

    def payloads(self, action: str, cp_id: str | None = None) -> list[dict[str, Any]]:
        return [m.payload for m in self.messages(action, cp_id)]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                ev = self._changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), 0.2)

    async def wait_count(
        self, action: str, n: int, cp_id: str | None = None, timeout_s: float = 10.0
    ) -> None:
        await self.wait_for(lambda: len(self.messages(action, cp_id)) >= n, timeout_s)

    async def call(self, cp_id: str, payload: Any) -> Any:
        """Send a CSMS-initiated call (an ``ocpp.v16.call`` / ``ocpp.v201.call`` object); CallErrors raise."""
        await self.wait_for(lambda: cp_id in self.cps)
        return await self.cps[cp_id].call(payload, suppress=False)
