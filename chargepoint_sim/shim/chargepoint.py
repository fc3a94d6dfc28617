"""The simulator's charge point (1.6 / 2.0.1) with the board's hardware behind it.

The OCPP side is exactly :class:`~chargepoint_sim.v16.ChargePoint16` / ``ChargePoint201``; the shim only
adds what a real meter needs: no meter value while the meter is failing (nothing made up), its real
voltages and currents, the meter's model in the BootNotification, a NotifyEvent (2.0.1) beside the
Faulted status, transaction ids that survive restarts (they come from the queue), and a hook so an
unhandled error in any of its tasks stops the shim (which opens the relays).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from chargepoint_sim.chargepoint import ChargePoint, ChargePointOptions, Connector
from chargepoint_sim.hardware import ConnectorHardware
from chargepoint_sim.rpc import CallError, ConnectionLost
from chargepoint_sim.shim.connector import ShimConnector
from chargepoint_sim.shim.queue import OfflineQueue
from chargepoint_sim.v16 import ChargePoint16
from chargepoint_sim.v201 import ChargePoint201

FAULT_COMPONENTS = {"PowerMeterFailure": "ElectricityMeter", "PowerSwitchFailure": "PowerContactor"}


class ShimChargePoint(ChargePoint):
    """Mixed into the 1.6 and 2.0.1 charge points (see :func:`create_shim_charge_point`)."""

    shim_connectors: dict[int, ShimConnector]
    queue: OfflineQueue
    on_unhandled: Callable[[BaseException], None]
    meter_type: str
    _event_ids: itertools.count[int]

    def _new_local_id(self) -> int:
        return self.queue.next_local_id()

    def _on_tx_sample(self, conn: Connector, tx: Any, trigger: str) -> None:
        if not self.shim_connectors[conn.id].meter.fresh:
            return  # a meter whose last read failed gives no sample at all, never a made-up or stale one
        super()._on_tx_sample(conn, tx, trigger)

    def _measure(self, conn: Connector, measurand: str) -> tuple[float, str, str] | None:
        reading = self.shim_connectors[conn.id].meter.last
        if measurand == "Voltage":
            return (round(reading.voltage_v[0], 1), "V", "Outlet") if reading and reading.voltage_v else None
        if measurand == "Current.Import":
            # the most loaded phase: what a current limit acts on
            return (
                (round(max(reading.current_a), 2), "A", "Outlet") if reading and reading.current_a else None
            )
        return super()._measure(conn, measurand)

    def _boot_payload(self) -> dict[str, Any]:
        payload = super()._boot_payload()
        if self.version == "1.6":
            payload["meterType"] = self.meter_type[:25]
        return payload

    def set_fault(self, connector_id: int, faulted: bool, error_code: str = "OtherError") -> None:
        super().set_fault(connector_id, faulted, error_code)
        if self.version == "2.0.1":
            self._notify_event(connector_id, faulted, error_code)

    def _notify_event(self, connector_id: int, faulted: bool, code: str) -> None:
        ts = self._ts()
        self._post(
            "NotifyEvent",
            {
                "generatedAt": ts,
                "seqNo": 0,
                "tbc": False,
                "eventData": [
                    {
                        "eventId": next(self._event_ids),
                        "timestamp": ts,
                        "trigger": "Alerting",
                        "actualValue": "true" if faulted else "false",
                        "techCode": code[:50],
                        "cleared": not faulted,
                        "eventNotificationType": "HardWiredNotification",
                        "component": {
                            "name": FAULT_COMPONENTS.get(code, "EVSE"),
                            "evse": {"id": connector_id},
                        },
                        "variable": {"name": "Problem"},
                    }
                ],
            },
        )

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        super()._task_done(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None and not isinstance(exc, ConnectionLost | TimeoutError | CallError):
                self.on_unhandled(exc)


class ShimChargePoint16(ShimChargePoint, ChargePoint16):
    pass


class ShimChargePoint201(ShimChargePoint, ChargePoint201):
    pass


def create_shim_charge_point(
    options: ChargePointOptions,
    connectors: dict[int, ShimConnector],
    queue: OfflineQueue,
    on_unhandled: Callable[[BaseException], None],
    meter_type: str,
) -> ShimChargePoint:
    cls: type[ShimChargePoint] = ShimChargePoint16 if options.protocol == "1.6" else ShimChargePoint201
    hardware: dict[int, ConnectorHardware] = {cid: sc.hardware for cid, sc in connectors.items()}
    cp = cls(options, hardware=hardware)
    cp.shim_connectors = connectors
    cp.queue = queue
    cp.journal = queue
    cp.on_unhandled = on_unhandled
    cp.meter_type = meter_type
    cp._event_ids = itertools.count(1)
    cp._csms_tx_ids.update(queue.csms_tx_ids())
    return cp
