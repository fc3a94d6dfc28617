"""The `ocpp` library's documented OCPP 1.6 central system, as its README shows it: a ChargePoint
subclass with one ``@on(Action.X)`` handler per message, served by ``websockets.serve`` with the
``ocpp1.6`` subprotocol. Bare: no storage. Written for this project in that documented shape.

    python bench/peers/ocpp16_bare.py --port 9000

A reference for ``bench/side_by_side.py``: what a Python central system costs per message when it only
validates (the library checks every message against the OCPP 1.6 schemas) and answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as Cp
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, AuthorizationStatus, RegistrationStatus
from websockets.asyncio.server import ServerConnection
from websockets.typing import Subprotocol

_transaction_ids = itertools.count(1)


def now() -> str:
    return datetime.now(UTC).isoformat()


class ChargePoint(Cp):
    """One connected charger: the handlers of the messages a charging session sends."""

    @on(Action.boot_notification)
    def on_boot_notification(
        self, charge_point_vendor: str, charge_point_model: str, **kwargs: Any
    ) -> call_result.BootNotification:
        return call_result.BootNotification(
            current_time=now(), interval=300, status=RegistrationStatus.accepted
        )

    @on(Action.heartbeat)
    def on_heartbeat(self) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=now())

    @on(Action.status_notification)
    def on_status_notification(
        self, connector_id: int, error_code: str, status: str, **kwargs: Any
    ) -> call_result.StatusNotification:
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str) -> call_result.Authorize:
        return call_result.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.start_transaction)
    def on_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **kwargs: Any
    ) -> call_result.StartTransaction:
        return call_result.StartTransaction(
            transaction_id=next(_transaction_ids), id_tag_info={"status": AuthorizationStatus.accepted}
        )

    @on(Action.stop_transaction)
    def on_stop_transaction(
        self, meter_stop: int, timestamp: str, transaction_id: int, **kwargs: Any
    ) -> call_result.StopTransaction:
        return call_result.StopTransaction(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.meter_values)
    def on_meter_values(
        self, connector_id: int, meter_value: list[dict[str, Any]], **kwargs: Any
    ) -> call_result.MeterValues:
        return call_result.MeterValues()


ChargePointFactory = type[ChargePoint]


def handler(factory: ChargePointFactory) -> Any:
    async def on_connect(websocket: ServerConnection) -> None:
        """Accept an OCPP 1.6 connection (the library's example refuses one without the subprotocol)."""
        if websocket.subprotocol != "ocpp1.6":
            await websocket.close(1002, "ocpp1.6 required")
            return
        assert websocket.request is not None
        charge_point_id = websocket.request.path.strip("/").rsplit("/", 1)[-1]
        charge_point = factory(charge_point_id, websocket)
        with contextlib.suppress(websockets.ConnectionClosed):
            await charge_point.start()

    return on_connect


async def serve(port: int, factory: ChargePointFactory = ChargePoint) -> None:
    async with websockets.serve(
        handler(factory), "127.0.0.1", port, subprotocols=[Subprotocol("ocpp1.6")]
    ) as server:
        print(f"listening on ws://127.0.0.1:{port}/ocpp", flush=True)
        await server.serve_forever()


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=9000, help="TCP port on 127.0.0.1 (default 9000)")
    return parser.parse_args()


if __name__ == "__main__":
    args = arguments(__doc__.splitlines()[0])
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.port))
