"""OCPP 2.0.1 adapter: messages, device model variables and CSMS-call handlers of a 2.0.1 station.

Each connector of the simulator is its own EVSE (``evseId`` = connector number, ``connectorId`` = 1).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from chargepoint_sim.chargepoint import (
    SUPPORTED_MEASURANDS,
    Authorization,
    ChargePoint,
    Connector,
    Profile,
    Transaction,
)
from chargepoint_sim.clock import iso, parse_iso
from chargepoint_sim.rpc import HandlerError, Reply

# (component, variable): (default, readonly, kind)
_VARIABLES: dict[tuple[str, str], tuple[str, bool, str]] = {
    ("OCPPCommCtrlr", "HeartbeatInterval"): ("300", False, "int"),
    ("OCPPCommCtrlr", "OfflineThreshold"): ("60", False, "int"),
    ("OCPPCommCtrlr", "MessageAttempts"): ("3", False, "int"),
    ("OCPPCommCtrlr", "MessageAttemptInterval"): ("5", False, "int"),
    ("OCPPCommCtrlr", "ResetRetries"): ("1", False, "int"),
    ("SampledDataCtrlr", "Enabled"): ("true", False, "bool"),
    ("SampledDataCtrlr", "TxUpdatedInterval"): ("60", False, "int"),
    ("SampledDataCtrlr", "TxUpdatedMeasurands"): (
        "Energy.Active.Import.Register,Power.Active.Import,SoC",
        False,
        "measurands",
    ),
    ("SampledDataCtrlr", "TxStartedMeasurands"): ("Energy.Active.Import.Register", False, "measurands"),
    ("SampledDataCtrlr", "TxEndedMeasurands"): ("Energy.Active.Import.Register", False, "measurands"),
    ("SampledDataCtrlr", "TxEndedInterval"): ("0", False, "int"),
    ("AlignedDataCtrlr", "Interval"): ("0", False, "int"),
    ("AlignedDataCtrlr", "Measurands"): ("Energy.Active.Import.Register", False, "measurands"),
    ("TxCtrlr", "EVConnectionTimeOut"): ("60", False, "int"),
    ("TxCtrlr", "StopTxOnEVSideDisconnect"): ("true", True, "bool"),
    ("TxCtrlr", "StopTxOnInvalidId"): ("true", False, "bool"),
    ("TxCtrlr", "TxStartPoint"): ("PowerPathClosed", False, "txpoints"),
    ("TxCtrlr", "TxStopPoint"): ("EVConnected,Authorized", False, "txpoints"),
    ("AuthCtrlr", "Enabled"): ("true", False, "bool"),
    ("AuthCtrlr", "AuthorizeRemoteStart"): ("false", False, "bool"),
    ("AuthCtrlr", "LocalAuthorizeOffline"): ("true", False, "bool"),
    ("AuthCtrlr", "LocalPreAuthorize"): ("false", False, "bool"),
    ("SmartChargingCtrlr", "Enabled"): ("true", False, "bool"),
    ("SmartChargingCtrlr", "RateUnit"): ("A,W", True, "str"),
    ("SmartChargingCtrlr", "ProfileStackLevel"): ("8", True, "int"),
    ("SmartChargingCtrlr", "PeriodsPerSchedule"): ("24", True, "int"),
    ("SmartChargingCtrlr", "Entries"): ("10", True, "int"),
    ("DeviceDataCtrlr", "ItemsPerMessage"): ("50", True, "int"),
    ("DeviceDataCtrlr", "BytesPerMessage"): ("65000", True, "int"),
    ("ChargingStation", "AvailabilityState"): ("Available", True, "str"),
    ("ChargingStation", "Model"): ("", True, "str"),
    ("ChargingStation", "VendorName"): ("", True, "str"),
    ("ClockCtrlr", "DateTime"): ("", True, "str"),
}
_COMPONENTS = {c for c, _ in _VARIABLES}
_TX_POINTS = {
    "ParkingBayOccupancy",
    "EVConnected",
    "Authorized",
    "DataSigned",
    "PowerPathClosed",
    "EnergyTransfer",
}
_BOOT_REASONS = {
    "ApplicationReset",
    "FirmwareUpdate",
    "LocalReset",
    "PowerUp",
    "RemoteReset",
    "ScheduledReset",
    "Triggered",
    "Unknown",
    "Watchdog",
}
_STOPPED_REASONS = {
    "DeAuthorized",
    "EmergencyStop",
    "EnergyLimitReached",
    "EVDisconnected",
    "GroundFault",
    "ImmediateReset",
    "Local",
    "LocalOutOfCredit",
    "MasterPass",
    "Other",
    "OvercurrentFault",
    "PowerLoss",
    "PowerQuality",
    "Reboot",
    "Remote",
    "SOCLimitReached",
    "StoppedByEV",
    "TimeLimitReached",
    "Timeout",
}
_WIRE_STATUS = {
    "Available": "Available",
    "Reserved": "Reserved",
    "Unavailable": "Unavailable",
    "Faulted": "Faulted",
}


class ChargePoint201(ChargePoint):
    version = "2.0.1"
    subprotocol = "ocpp2.0.1"

    # ------------------------------------------------------------------ device model
    def _init_config(self) -> None:
        self.variables: dict[tuple[str, str], str] = {k: v[0] for k, v in _VARIABLES.items()}
        self.variables[("OCPPCommCtrlr", "HeartbeatInterval")] = str(int(self.heartbeat_interval))
        self.variables[("SampledDataCtrlr", "TxUpdatedInterval")] = str(int(self.meter_interval))
        self.variables[("TxCtrlr", "EVConnectionTimeOut")] = str(int(self.options.connection_timeout_s))
        self.variables[("OCPPCommCtrlr", "MessageAttempts")] = str(self.options.message_attempts)
        self.variables[("ChargingStation", "Model")] = self.options.model
        self.variables[("ChargingStation", "VendorName")] = self.options.vendor

    def _var(self, component: str, variable: str) -> str:
        if (component, variable) == ("ClockCtrlr", "DateTime"):
            return iso(self.clock.now())
        if (component, variable) == ("ChargingStation", "AvailabilityState"):
            return "Available" if any(c.operative for c in self.connectors.values()) else "Unavailable"
        return self.variables[(component, variable)]

    def _flag(self, component: str, variable: str) -> bool:
        return self.variables.get((component, variable), "false").lower() == "true"

    def _measurands(self, variable: str) -> list[str]:
        raw = self.variables.get(("SampledDataCtrlr", variable), "")
        return [m.strip() for m in raw.split(",") if m.strip()]

    def _set_heartbeat_config(self, interval: float) -> None:
        self.variables[("OCPPCommCtrlr", "HeartbeatInterval")] = str(int(interval))

    def set_variable(self, component: str, variable: str, value: str) -> str:
        """Apply one SetVariables entry; returns the attributeStatus."""
        if component not in _COMPONENTS:
            return "UnknownComponent"
        spec = _VARIABLES.get((component, variable))
        if spec is None:
            return "UnknownVariable"
        _, readonly, kind = spec
        if readonly or (
            (component, variable) == ("SampledDataCtrlr", "TxUpdatedInterval") and self.lock_meter_interval
        ):
            return "Rejected"
        if kind == "int":
            try:
                n = int(value)
            except ValueError:
                return "Rejected"
            if n < 0:
                return "Rejected"
            value = str(n)
        elif kind == "bool":
            if value.lower() not in ("true", "false"):
                return "Rejected"
            value = value.lower()
        elif (
            kind == "measurands"
            and any(m.strip() not in SUPPORTED_MEASURANDS for m in value.split(",") if m.strip())
        ) or (
            kind == "txpoints" and (not value or any(m.strip() not in _TX_POINTS for m in value.split(",")))
        ):
            return "Rejected"
        self.variables[(component, variable)] = value
        key = (component, variable)
        if key == ("OCPPCommCtrlr", "HeartbeatInterval"):
            self.heartbeat_interval = float(value)
            self._hb_wake.set()
        elif key == ("SampledDataCtrlr", "TxUpdatedInterval"):
            self.meter_interval = float(value)
            self._meter_wake.set()
        elif key == ("TxCtrlr", "EVConnectionTimeOut"):
            self.options.connection_timeout_s = float(value)
        elif key == ("OCPPCommCtrlr", "MessageAttempts"):
            self.options.message_attempts = max(1, int(value))
        elif key == ("OCPPCommCtrlr", "MessageAttemptInterval"):
            self.options.message_retry_s = float(value)
        return "Accepted"

    def _local_authorize_offline(self) -> bool:
        return self._flag("AuthCtrlr", "LocalAuthorizeOffline")

    def _starts_on_plug(self) -> bool:
        points = {p.strip() for p in self.variables[("TxCtrlr", "TxStartPoint")].split(",")}
        return bool(points & {"EVConnected", "ParkingBayOccupancy"})

    def _reset_stop_reason(self, reason: str) -> str:
        return "ImmediateReset"

    # ------------------------------------------------------------------ outbound messages
    def _boot_payload(self) -> dict[str, Any]:
        o = self.options
        station: dict[str, Any] = {
            "model": o.model[:20],
            "vendorName": o.vendor[:50],
            "firmwareVersion": o.firmware,
        }
        if o.serial:
            station["serialNumber"] = o.serial[:25]
        reason = self.boot_reason if self.boot_reason in _BOOT_REASONS else "RemoteReset"
        return {"reason": reason, "chargingStation": station}

    def _wire_status(self, status: str) -> str:
        return _WIRE_STATUS.get(status, "Occupied")

    async def _send_status(self, conn: Connector) -> None:
        wire = self._wire_status(conn.status)
        self._post(
            "StatusNotification",
            {"timestamp": self._ts(), "connectorStatus": wire, "evseId": conn.id, "connectorId": 1},
        )
        if self.online:
            conn.reported_status = wire

    async def _send_all_statuses(self) -> None:
        for c in self.connectors.values():
            c.reported_status = None
            await self._refresh_status(c)

    def _authorize_payload(self, id_tag: str) -> dict[str, Any]:
        return {"idToken": {"idToken": id_tag[:36], "type": "ISO14443"}}

    def _authorize_status(self, result: dict[str, Any]) -> str:
        return str(result.get("idTokenInfo", {}).get("status", "Invalid"))

    def _meter_value(self, conn: Connector, context: str, measurands: list[str]) -> dict[str, Any]:
        quirks = self.faults.quirks
        values: list[dict[str, Any]] = []
        for measurand in measurands:
            m = self._measure(conn, measurand)
            if m is None:
                continue
            value, unit, location = m
            if unit == "Wh":
                value = int(value)
            if unit == "Wh" and "energy_kwh" in quirks:
                value, unit = round(value / 1000.0, 3), "kWh"
            elif unit == "W" and "power_kw" in quirks:
                value, unit = round(value / 1000.0, 3), "kW"
            sv: dict[str, Any] = {
                "value": value,
                "context": context,
                "measurand": measurand,
                "location": location,
                "unitOfMeasure": {"unit": unit},
            }
            if measurand == "Energy.Active.Import.Register" and "missing_measurand" in quirks:
                del sv["measurand"]
            values.append(sv)
        return {"timestamp": self._ts(), "sampledValue": values}

    def _tx_event(
        self,
        conn: Connector,
        tx: Transaction,
        event_type: str,
        trigger: str,
        *,
        meter: dict[str, Any] | None = None,
        id_token: bool = False,
        stopped_reason: str | None = None,
    ) -> None:
        info: dict[str, Any] = {"transactionId": tx.tx_id, "chargingState": tx.charging_state}
        if stopped_reason is not None:
            info["stoppedReason"] = stopped_reason
        if tx.remote_start_id is not None and (event_type == "Started" or trigger == "RemoteStart"):
            info["remoteStartId"] = tx.remote_start_id
        payload: dict[str, Any] = {
            "eventType": event_type,
            "timestamp": self._ts(),
            "triggerReason": trigger,
            "seqNo": tx.next_seq(),
            "transactionInfo": info,
            "evse": {"id": conn.id, "connectorId": 1},
        }
        if not self.online:
            payload["offline"] = True
        if id_token and tx.id_tag:
            payload["idToken"] = {"idToken": tx.id_tag[:36], "type": tx.id_type}
        if meter is not None and meter["sampledValue"]:
            payload["meterValue"] = [meter]

        def on_result(result: dict[str, Any]) -> None:
            if "totalCost" in result:
                self.costs.append({"transactionId": tx.tx_id, "totalCost": result["totalCost"]})
            status = result.get("idTokenInfo", {}).get("status")
            if status is not None:
                tx.id_tag_status = str(status)
                if status != "Accepted" and self._flag("TxCtrlr", "StopTxOnInvalidId") and conn.tx is tx:
                    self._spawn(self.stop_charging(conn.id, "DeAuthorized"))
            self._pulse()

        self._post("TransactionEvent", payload, persistent=True, on_result=on_result, tx=tx)

    def _on_tx_started(self, conn: Connector, tx: Transaction, trigger: str) -> None:
        tx.tx_id = str(uuid.uuid4())
        meter = self._meter_value(conn, "Transaction.Begin", self._measurands("TxStartedMeasurands"))
        self._tx_event(conn, tx, "Started", trigger, meter=meter, id_token=tx.authorized)

    def _on_tx_authorized(self, conn: Connector, tx: Transaction, trigger: str) -> None:
        tx.charging_state = self._charging_state(conn)
        self._tx_event(conn, tx, "Updated", trigger, id_token=True)

    def _on_charging_state(self, conn: Connector, tx: Transaction, trigger: str) -> None:
        self._tx_event(conn, tx, "Updated", trigger)

    def _on_tx_sample(self, conn: Connector, tx: Transaction | None, trigger: str) -> None:
        context = "Trigger" if trigger == "Trigger" else "Sample.Periodic"
        meter = self._meter_value(conn, context, self._measurands("TxUpdatedMeasurands"))
        if tx is None or "meter_values_without_tx_id" in self.faults.quirks:
            self._post(
                "MeterValues", {"evseId": conn.id, "meterValue": [meter]}, persistent=tx is not None, tx=tx
            )
            return
        self._tx_event(conn, tx, "Updated", trigger, meter=meter)

    def _on_tx_ended(self, conn: Connector, tx: Transaction, reason: str, trigger: str) -> None:
        meter = self._meter_value(conn, "Transaction.End", self._measurands("TxEndedMeasurands"))
        stopped = reason if reason in _STOPPED_REASONS else "Other"
        self._tx_event(conn, tx, "Ended", trigger, meter=meter, stopped_reason=stopped)

    # ------------------------------------------------------------------ inbound CSMS calls
    async def _handle(self, action: str, payload: dict[str, Any]) -> Reply:
        method = getattr(self, f"_on_{action}", None)
        if method is None:
            raise HandlerError("NotImplemented", f"{action} is not implemented by this charging station")
        reply: Reply = await method(payload)
        return reply

    def _tx_by_id(self, tx_id: str) -> Connector | None:
        for c in self.connectors.values():
            if c.tx is not None and c.tx.tx_id == tx_id:
                return c
        return None

    async def _on_RequestStartTransaction(self, p: dict[str, Any]) -> Reply:
        token = p["idToken"]
        evse_id = p.get("evseId")
        profile = p.get("chargingProfile")
        if evse_id is None:
            free = [c for c in self.connectors.values() if c.tx is None and c.operative and not c.faulted]
            free_or_unauth = free or [
                c for c in self.connectors.values() if c.tx is not None and not c.tx.authorized
            ]
            plugged = [c for c in free_or_unauth if c.plugged]
            conn = (plugged or free_or_unauth or [None])[0]
        else:
            conn = self.connectors.get(int(evse_id))
        if conn is None or not conn.operative or conn.faulted:
            return Reply({"status": "Rejected"})
        if conn.tx is not None and conn.tx.authorized:
            return Reply({"status": "Rejected"})
        if profile is not None and profile.get("chargingProfilePurpose") != "TxProfile":
            return Reply({"status": "Rejected"})
        target = conn
        reply: dict[str, Any] = {"status": "Accepted"}
        if conn.tx is not None:
            reply["transactionId"] = conn.tx.tx_id

        async def then() -> None:
            if self._flag("AuthCtrlr", "AuthorizeRemoteStart"):
                status = await self._authorize_remote(str(token["idToken"]))
                if status != "Accepted":
                    return
            target.auth = Authorization(
                str(token["idToken"]),
                self.clock.monotonic(),
                id_type=str(token.get("type", "Central")),
                remote_start_id=int(p["remoteStartId"]),
                remote=True,
                profile=profile,
            )
            target.finishing = False
            await self._evaluate(target)

        return Reply(reply, then)

    async def _on_RequestStopTransaction(self, p: dict[str, Any]) -> Reply:
        conn = self._tx_by_id(str(p["transactionId"]))
        if conn is None:
            return Reply({"status": "Rejected"})
        target = conn

        async def then() -> None:
            await self.stop_charging(target.id, "Remote")

        return Reply({"status": "Accepted"}, then)

    def _parse_profile(self, raw: dict[str, Any], connector_id: int) -> Profile | None:
        schedules = raw.get("chargingSchedule") or []
        if not schedules:
            return None
        sched = schedules[0]
        purpose = str(raw["chargingProfilePurpose"])
        if purpose == "ChargingStationMaxProfile":
            purpose = "ChargePointMaxProfile"
        return Profile(
            id=int(raw["id"]),
            connector_id=connector_id,
            stack_level=int(raw["stackLevel"]),
            purpose=purpose,
            kind=str(raw["chargingProfileKind"]),
            unit=str(sched["chargingRateUnit"]),
            periods=[
                (float(x["startPeriod"]), float(x["limit"]), x.get("numberPhases"))
                for x in sched["chargingSchedulePeriod"]
            ],
            start_schedule=parse_iso(sched["startSchedule"]).timestamp()
            if sched.get("startSchedule")
            else None,
            duration=float(sched["duration"]) if sched.get("duration") is not None else None,
            recurrency=raw.get("recurrencyKind"),
            transaction_ref=str(raw["transactionId"]) if raw.get("transactionId") is not None else None,
            valid_from=parse_iso(raw["validFrom"]).timestamp() if raw.get("validFrom") else None,
            valid_to=parse_iso(raw["validTo"]).timestamp() if raw.get("validTo") else None,
            received_at=self.clock.epoch(),
        )

    async def _on_SetChargingProfile(self, p: dict[str, Any]) -> Reply:
        if self.faults.reject_charging_profiles or not self._flag("SmartChargingCtrlr", "Enabled"):
            return Reply({"status": "Rejected", "statusInfo": {"reasonCode": "NotSupported"}})
        evse_id = int(p["evseId"])
        if evse_id != 0 and evse_id not in self.connectors:
            return Reply({"status": "Rejected", "statusInfo": {"reasonCode": "UnknownEvse"}})
        prof = self._parse_profile(p["chargingProfile"], evse_id)
        if prof is None or prof.stack_level > int(
            self.variables[("SmartChargingCtrlr", "ProfileStackLevel")]
        ):
            return Reply({"status": "Rejected"})
        if prof.purpose == "TxProfile":
            if evse_id == 0:
                return Reply({"status": "Rejected"})
            tx = self.connectors[evse_id].tx
            if tx is None or (prof.transaction_ref is not None and prof.transaction_ref != tx.tx_id):
                return Reply({"status": "Rejected", "statusInfo": {"reasonCode": "TxNotFound"}})
        elif prof.purpose == "ChargePointMaxProfile" and evse_id != 0:
            return Reply({"status": "Rejected"})
        self._store_profile(prof)
        return Reply({"status": "Accepted"})

    async def _on_ClearChargingProfile(self, p: dict[str, Any]) -> Reply:
        crit = p.get("chargingProfileCriteria") or {}
        purpose = crit.get("chargingProfilePurpose")
        if purpose == "ChargingStationMaxProfile":
            purpose = "ChargePointMaxProfile"
        removed = self._clear_profiles(
            p.get("chargingProfileId"), crit.get("evseId"), purpose, crit.get("stackLevel")
        )
        return Reply({"status": "Accepted" if removed else "Unknown"})

    async def _on_GetVariables(self, p: dict[str, Any]) -> Reply:
        results = []
        for item in p["getVariableData"]:
            comp, var = item["component"], item["variable"]
            attr = item.get("attributeType", "Actual")
            res: dict[str, Any] = {"component": comp, "variable": var, "attributeType": attr}
            if comp["name"] not in _COMPONENTS:
                res["attributeStatus"] = "UnknownComponent"
            elif (comp["name"], var["name"]) not in _VARIABLES:
                res["attributeStatus"] = "UnknownVariable"
            elif attr != "Actual":
                res["attributeStatus"] = "NotSupportedAttributeType"
            else:
                res["attributeStatus"] = "Accepted"
                res["attributeValue"] = self._var(comp["name"], var["name"])[:2500]
            results.append(res)
        return Reply({"getVariableResult": results})

    def _set_basic_auth_password(self, value: str) -> str:
        """A01: a passwordString of 16 to 40 characters; write-only (never reported)."""
        if not 16 <= len(value) <= 40 or not all(
            c.isascii() and (c.isalnum() or c in "*-_=:+|@.") for c in value
        ):
            return "Rejected"
        return "Accepted" if self.take_new_password(value) else "Rejected"

    async def _on_SetVariables(self, p: dict[str, Any]) -> Reply:
        results = []
        then: Callable[[], Coroutine[Any, Any, None]] | None = None
        for item in p["setVariableData"]:
            comp, var = item["component"], item["variable"]
            attr = item.get("attributeType", "Actual")
            if attr != "Actual":
                status = "NotSupportedAttributeType"
            elif (comp["name"], var["name"]) == ("SecurityCtrlr", "BasicAuthPassword"):
                status = self._set_basic_auth_password(str(item["attributeValue"]))
                if status == "Accepted":
                    then = self.reconnect_with_new_password
            else:
                status = self.set_variable(comp["name"], var["name"], str(item["attributeValue"]))
            results.append(
                {"attributeType": attr, "attributeStatus": status, "component": comp, "variable": var}
            )
        return Reply({"setVariableResult": results}, then=then)

    async def _on_GetBaseReport(self, p: dict[str, Any]) -> Reply:
        request_id = int(p["requestId"])
        if p["reportBase"] not in ("ConfigurationInventory", "FullInventory", "SummaryInventory"):
            return Reply({"status": "NotSupported"})
        report = []
        for (comp, var), (_, readonly, kind) in _VARIABLES.items():
            data_type = {
                "int": "integer",
                "bool": "boolean",
                "measurands": "MemberList",
                "txpoints": "MemberList",
            }
            report.append(
                {
                    "component": {"name": comp},
                    "variable": {"name": var},
                    "variableAttribute": [
                        {
                            "type": "Actual",
                            "value": self._var(comp, var)[:2500],
                            "mutability": "ReadOnly" if readonly else "ReadWrite",
                        }
                    ],
                    "variableCharacteristics": {
                        "dataType": data_type.get(kind, "string"),
                        "supportsMonitoring": False,
                    },
                }
            )

        async def then() -> None:
            # NotifyReport in parts of 20 entries, tbc=true on all but the last
            chunks = [report[i : i + 20] for i in range(0, len(report), 20)]
            for seq, chunk in enumerate(chunks):
                self._post(
                    "NotifyReport",
                    {
                        "requestId": request_id,
                        "generatedAt": self._ts(),
                        "seqNo": seq,
                        "tbc": seq < len(chunks) - 1,
                        "reportData": chunk,
                    },
                )

        return Reply({"status": "Accepted"}, then)

    async def _on_TriggerMessage(self, p: dict[str, Any]) -> Reply:
        what = p["requestedMessage"]
        evse = p.get("evse") or {}
        evse_id = evse.get("id")
        supported = {
            "BootNotification",
            "Heartbeat",
            "MeterValues",
            "StatusNotification",
            "TransactionEvent",
            "FirmwareStatusNotification",
            "LogStatusNotification",
        }
        if what not in supported:
            return Reply({"status": "NotImplemented"})
        if evse_id is not None and evse_id not in self.connectors:
            return Reply({"status": "Rejected"})
        if what == "BootNotification" and self.registration == "Accepted":
            return Reply({"status": "Rejected"})  # the spec: only when not yet accepted
        conns = [self.connectors[evse_id]] if evse_id else list(self.connectors.values())
        if what == "TransactionEvent" and not any(c.tx for c in conns):
            return Reply({"status": "Rejected"})

        async def then() -> None:
            if what == "BootNotification":
                self.boot_reason = "Triggered"
                if self.conn is not None:
                    await self.conn.call("BootNotification", self._boot_payload())
            elif what == "Heartbeat":
                if self.conn is not None:
                    await self.conn.call("Heartbeat", {})
            elif what == "StatusNotification":
                for c in conns:
                    await self._send_status(c)
            elif what == "MeterValues":
                for c in conns:
                    meter = self._meter_value(c, "Trigger", self._measurands("TxUpdatedMeasurands"))
                    self._post("MeterValues", {"evseId": c.id, "meterValue": [meter]})
            elif what == "TransactionEvent":
                for c in conns:
                    if c.tx is not None:
                        meter = self._meter_value(c, "Trigger", self._measurands("TxUpdatedMeasurands"))
                        self._tx_event(c, c.tx, "Updated", "Trigger", meter=meter)
            elif what == "FirmwareStatusNotification" or what == "LogStatusNotification":
                self._post(what, {"status": "Idle"})

        return Reply({"status": "Accepted"}, then)

    async def _on_Reset(self, p: dict[str, Any]) -> Reply:
        if p.get("evseId") is not None:
            return Reply({"status": "Rejected", "statusInfo": {"reasonCode": "UnsupportedRequest"}})
        busy = any(c.tx is not None for c in self.connectors.values())
        if p["type"] == "OnIdle" and busy:

            async def when_idle() -> None:
                await self.wait_for(lambda: all(c.tx is None for c in self.connectors.values()), 86400)
                await self.reboot("RemoteReset")

            return Reply({"status": "Scheduled"}, when_idle)

        async def then() -> None:
            await self.reboot("RemoteReset")

        return Reply({"status": "Accepted"}, then)

    async def _on_UnlockConnector(self, p: dict[str, Any]) -> Reply:
        conn = self.connectors.get(int(p["evseId"]))
        if conn is None or int(p["connectorId"]) != 1:
            return Reply({"status": "UnknownConnector"})
        if conn.tx is not None and conn.tx.authorized:
            return Reply({"status": "OngoingAuthorizedTransaction"})
        ok = conn.hw.ev.unlock()
        return Reply({"status": "Unlocked" if ok else "UnlockFailed"})

    async def _on_ChangeAvailability(self, p: dict[str, Any]) -> Reply:
        operative = p["operationalStatus"] == "Operative"
        evse = p.get("evse") or {}
        evse_id = evse.get("id")
        if evse_id is not None and evse_id != 0 and evse_id not in self.connectors:
            return Reply({"status": "Rejected"})
        targets = list(self.connectors.values()) if not evse_id else [self.connectors[evse_id]]
        scheduled = False
        for c in targets:
            if c.tx is not None and not operative:
                c.pending_operative = operative
                scheduled = True
            else:
                c.operative = operative
                c.pending_operative = None

        async def then() -> None:
            for c in targets:
                await self._refresh_status(c)

        return Reply({"status": "Scheduled" if scheduled else "Accepted"}, then)

    async def _on_DataTransfer(self, p: dict[str, Any]) -> Reply:
        self.data_transfers.append(p)
        self._pulse()
        return Reply({"status": "Accepted"})

    async def _on_CostUpdated(self, p: dict[str, Any]) -> Reply:
        self.costs.append(p)
        self._pulse()
        return Reply({})

    async def _on_ClearCache(self, p: dict[str, Any]) -> Reply:
        return Reply({"status": "Accepted"})

    async def _on_GetLocalListVersion(self, p: dict[str, Any]) -> Reply:
        return Reply({"versionNumber": 0})
