"""OCPP 1.6J adapter: messages and CSMS-call handlers of a 1.6 charge point."""

from __future__ import annotations

from typing import Any

from chargepoint_sim.chargepoint import (
    SUPPORTED_MEASURANDS,
    Authorization,
    ChargePoint,
    Connector,
    Profile,
    Transaction,
)
from chargepoint_sim.clock import parse_iso
from chargepoint_sim.rpc import HandlerError, Reply

# key: (default, readonly, kind)
_CONFIG: dict[str, tuple[str, bool, str]] = {
    "HeartbeatInterval": ("300", False, "int"),
    "MeterValueSampleInterval": ("60", False, "int"),
    "MeterValuesSampledData": ("Energy.Active.Import.Register,Power.Active.Import,SoC", False, "measurands"),
    "StopTxnSampledData": ("Energy.Active.Import.Register", False, "measurands"),
    "ClockAlignedDataInterval": ("0", False, "int"),
    "MeterValuesAlignedData": ("Energy.Active.Import.Register", False, "measurands"),
    "ConnectionTimeOut": ("60", False, "int"),
    "NumberOfConnectors": ("1", True, "int"),
    "AuthorizeRemoteTxRequests": ("false", False, "bool"),
    "LocalAuthorizeOffline": ("true", False, "bool"),
    "LocalPreAuthorize": ("false", False, "bool"),
    "StopTransactionOnEVSideDisconnect": ("true", False, "bool"),
    "StopTransactionOnInvalidId": ("true", False, "bool"),
    "UnlockConnectorOnEVSideDisconnect": ("true", False, "bool"),
    "TransactionMessageAttempts": ("3", False, "int"),
    "TransactionMessageRetryInterval": ("5", False, "int"),
    "ResetRetries": ("1", False, "int"),
    "WebSocketPingInterval": ("20", False, "int"),
    "GetConfigurationMaxKeys": ("50", True, "int"),
    "SupportedFeatureProfiles": ("Core,SmartCharging,RemoteTrigger", True, "str"),
    "ChargeProfileMaxStackLevel": ("8", True, "int"),
    "ChargingScheduleAllowedChargingRateUnit": ("Current,Power", True, "str"),
    "ChargingScheduleMaxPeriods": ("24", True, "int"),
    "MaxChargingProfilesInstalled": ("10", True, "int"),
    "MeterValuesSampledDataMaxLength": ("7", True, "int"),
}

_TRIGGERABLE = (
    "BootNotification",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StatusNotification",
)


class ChargePoint16(ChargePoint):
    version = "1.6"
    subprotocol = "ocpp1.6"

    # ------------------------------------------------------------------ configuration
    def _init_config(self) -> None:
        self.config: dict[str, str] = {k: v[0] for k, v in _CONFIG.items()}
        self.config["NumberOfConnectors"] = str(len(self.connectors))
        self.config["HeartbeatInterval"] = str(int(self.heartbeat_interval))
        self.config["MeterValueSampleInterval"] = str(int(self.meter_interval))
        self.config["ConnectionTimeOut"] = str(int(self.options.connection_timeout_s))
        self.config["TransactionMessageAttempts"] = str(self.options.message_attempts)

    def _flag(self, key: str) -> bool:
        return self.config.get(key, "false").lower() == "true"

    def _measurands(self, key: str) -> list[str]:
        return [m.strip() for m in self.config.get(key, "").split(",") if m.strip()]

    def _set_heartbeat_config(self, interval: float) -> None:
        self.config["HeartbeatInterval"] = str(int(interval))

    def change_configuration(self, key: str, value: str) -> str:
        """Apply a ChangeConfiguration; returns Accepted / Rejected / NotSupported."""
        spec = _CONFIG.get(key)
        if spec is None:
            return "NotSupported"
        _, readonly, kind = spec
        if readonly or (key == "MeterValueSampleInterval" and self.lock_meter_interval):
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
        elif kind == "measurands":
            items = [m.strip() for m in value.split(",") if m.strip()]
            if any(m not in SUPPORTED_MEASURANDS for m in items):
                return "Rejected"
        self.config[key] = value
        if key == "HeartbeatInterval":
            self.heartbeat_interval = float(value)
            self._hb_wake.set()
        elif key == "MeterValueSampleInterval":
            self.meter_interval = float(value)
            self._meter_wake.set()
        elif key == "ConnectionTimeOut":
            self.options.connection_timeout_s = float(value)
        elif key == "TransactionMessageAttempts":
            self.options.message_attempts = max(1, int(value))
        elif key == "TransactionMessageRetryInterval":
            self.options.message_retry_s = float(value)
        return "Accepted"

    def _local_authorize_offline(self) -> bool:
        return self._flag("LocalAuthorizeOffline")

    # ------------------------------------------------------------------ outbound messages
    def _boot_payload(self) -> dict[str, Any]:
        o = self.options
        p: dict[str, Any] = {
            "chargePointVendor": o.vendor[:20],
            "chargePointModel": o.model[:20],
            "firmwareVersion": o.firmware[:50],
            "meterType": "SimMeter",
        }
        if o.serial:
            p["chargePointSerialNumber"] = o.serial[:25]
        return p

    def _status_payload(self, connector_id: int, status: str, error_code: str = "NoError") -> dict[str, Any]:
        return {
            "connectorId": connector_id,
            "errorCode": error_code,
            "status": status,
            "timestamp": self._ts(),
        }

    async def _send_status(self, conn: Connector) -> None:
        self._post("StatusNotification", self._status_payload(conn.id, conn.status, conn.error_code))
        if self.online:
            conn.reported_status = conn.status

    async def _send_all_statuses(self) -> None:
        any_operative = any(c.operative for c in self.connectors.values())
        self._post(
            "StatusNotification", self._status_payload(0, "Available" if any_operative else "Unavailable")
        )
        for c in self.connectors.values():
            c.reported_status = None
            await self._refresh_status(c)
            if c.reported_status is None:
                await self._send_status(c)

    def _authorize_payload(self, id_tag: str) -> dict[str, Any]:
        return {"idTag": id_tag[:20]}

    def _authorize_status(self, result: dict[str, Any]) -> str:
        return str(result.get("idTagInfo", {}).get("status", "Invalid"))

    def _sampled_value(self, conn: Connector, measurand: str, context: str) -> dict[str, Any] | None:
        m = self._measure(conn, measurand)
        if m is None:
            return None
        value, unit, location = m
        quirks = self.faults.quirks
        text = str(int(value)) if unit == "Wh" else f"{value:g}"
        if unit == "Wh" and "energy_kwh" in quirks:
            text, unit = f"{value / 1000:.3f}", "kWh"
        elif unit == "W" and "power_kw" in quirks:
            text, unit = f"{value / 1000:.3f}", "kW"
        sv: dict[str, Any] = {
            "value": text,
            "context": context,
            "format": "Raw",
            "measurand": measurand,
            "location": location,
            "unit": unit,
        }
        if measurand == "Energy.Active.Import.Register" and "missing_measurand" in quirks:
            del sv["measurand"]
        return sv

    def _meter_value(self, conn: Connector, context: str, measurands: list[str]) -> dict[str, Any]:
        values = [sv for m in measurands if (sv := self._sampled_value(conn, m, context)) is not None]
        return {"timestamp": self._ts(), "sampledValue": values}

    def _on_tx_started(self, conn: Connector, tx: Transaction, trigger: str) -> None:
        payload = {
            "connectorId": conn.id,
            "idTag": (tx.id_tag or "")[:20],
            "meterStart": tx.meter_start_wh,
            "timestamp": self._ts(),
        }
        tx.begin_sample = self._meter_value(conn, "Transaction.Begin", self._measurands("StopTxnSampledData"))

        def on_result(result: dict[str, Any]) -> None:
            tx.csms_id = int(result["transactionId"])
            tx.tx_id = str(tx.csms_id)
            self._remember_csms_tx_id(tx.local_id, tx.csms_id)
            status = str(result.get("idTagInfo", {}).get("status", "Accepted"))
            tx.id_tag_status = status
            self._apply_limit(conn)  # a TxProfile bound to this transaction id may now apply
            if status != "Accepted" and self._flag("StopTransactionOnInvalidId") and conn.tx is tx:
                self._spawn(self.stop_charging(conn.id, "DeAuthorized"))
            self._pulse()

        self._post("StartTransaction", payload, persistent=True, on_result=on_result, tx=tx)

    def _on_tx_sample(self, conn: Connector, tx: Transaction | None, trigger: str) -> None:
        context = "Trigger" if trigger == "Trigger" else "Sample.Periodic"
        mv = self._meter_value(conn, context, self._measurands("MeterValuesSampledData"))
        with_tx = tx is not None and "meter_values_without_tx_id" not in self.faults.quirks
        # the transactionId is added when it is sent (_resolve), once the CSMS has assigned it
        self._post(
            "MeterValues",
            {"connectorId": conn.id, "meterValue": [mv]},
            persistent=tx is not None,
            tx=tx if with_tx else None,
        )

    def _on_tx_ended(self, conn: Connector, tx: Transaction, reason: str, trigger: str) -> None:
        ts = self._ts()
        end = self._meter_value(conn, "Transaction.End", self._measurands("StopTxnSampledData"))
        reason16 = reason if reason in _STOP_REASONS else "Other"

        p: dict[str, Any] = {
            "meterStop": tx.meter_stop_wh or 0,
            "timestamp": ts,
            "reason": reason16,
            "transactionData": [v for v in (tx.begin_sample, end) if v],
        }
        if tx.id_tag:
            p["idTag"] = tx.id_tag[:20]
        self._post("StopTransaction", p, persistent=True, tx=tx)  # transactionId: _resolve

    def _resolve(self, action: str, payload: dict[str, Any], local_id: int | None) -> dict[str, Any] | None:
        """Add the CSMS's transactionId to MeterValues and StopTransaction of a local transaction."""
        if local_id is None or action not in ("MeterValues", "StopTransaction"):
            return payload
        csms_id = self._csms_tx_ids.get(local_id)
        if csms_id is None:
            # StartTransaction never got through: nothing to stop at the CSMS; samples go without an id
            return None if action == "StopTransaction" else payload
        if action == "StopTransaction":
            del self._csms_tx_ids[local_id]
        return {**payload, "transactionId": csms_id}

    def _tx_by_csms_id(self, tx_id: int) -> Connector | None:
        for c in self.connectors.values():
            if c.tx is not None and c.tx.csms_id == tx_id:
                return c
        return None

    # ------------------------------------------------------------------ inbound CSMS calls
    async def _handle(self, action: str, payload: dict[str, Any]) -> Reply:
        method = getattr(self, f"_on_{action}", None)
        if method is None:
            raise HandlerError("NotImplemented", f"{action} is not implemented by this charge point")
        reply: Reply = await method(payload)
        return reply

    async def _on_RemoteStartTransaction(self, p: dict[str, Any]) -> Reply:
        id_tag = str(p["idTag"])
        cid = p.get("connectorId")
        if cid is None:
            free = [c for c in self.connectors.values() if c.tx is None and c.operative and not c.faulted]
            plugged = [c for c in free if c.plugged]
            conn = (plugged or free or [None])[0]
        else:
            conn = self.connectors.get(int(cid))
        profile = p.get("chargingProfile")
        if conn is None or conn.tx is not None or not conn.operative or conn.faulted:
            return Reply({"status": "Rejected"})
        if profile is not None and profile.get("chargingProfilePurpose") != "TxProfile":
            return Reply({"status": "Rejected"})
        target = conn

        async def then() -> None:
            if self._flag("AuthorizeRemoteTxRequests"):
                status = await self._authorize_remote(id_tag)
                if status != "Accepted":
                    return
            target.auth = Authorization(id_tag, self.clock.monotonic(), remote=True, profile=profile)
            target.finishing = False
            await self._evaluate(target)

        return Reply({"status": "Accepted"}, then)

    async def _on_RemoteStopTransaction(self, p: dict[str, Any]) -> Reply:
        conn = self._tx_by_csms_id(int(p["transactionId"]))
        if conn is None:
            return Reply({"status": "Rejected"})
        target = conn

        async def then() -> None:
            await self.stop_charging(target.id, "Remote")

        return Reply({"status": "Accepted"}, then)

    def _parse_profile(self, raw: dict[str, Any], connector_id: int) -> Profile | None:
        sched = raw["chargingSchedule"]
        return Profile(
            id=int(raw["chargingProfileId"]),
            connector_id=connector_id,
            stack_level=int(raw["stackLevel"]),
            purpose=str(raw["chargingProfilePurpose"]),
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
        if self.faults.reject_charging_profiles:
            return Reply({"status": "Rejected"})
        cid = int(p["connectorId"])
        raw = p["csChargingProfiles"]
        if cid != 0 and cid not in self.connectors:
            return Reply({"status": "Rejected"})
        prof = self._parse_profile(raw, cid)
        if prof is None or prof.stack_level > int(self.config["ChargeProfileMaxStackLevel"]):
            return Reply({"status": "Rejected"})
        if prof.purpose == "TxProfile":
            if cid == 0:
                return Reply({"status": "Rejected"})
            tx = self.connectors[cid].tx
            if tx is None or (prof.transaction_ref is not None and prof.transaction_ref != tx.tx_id):
                return Reply({"status": "Rejected"})
        elif prof.purpose == "ChargePointMaxProfile" and cid != 0:
            return Reply({"status": "Rejected"})
        self._store_profile(prof)
        return Reply({"status": "Accepted"})

    async def _on_ClearChargingProfile(self, p: dict[str, Any]) -> Reply:
        removed = self._clear_profiles(
            p.get("id"), p.get("connectorId"), p.get("chargingProfilePurpose"), p.get("stackLevel")
        )
        return Reply({"status": "Accepted" if removed else "Unknown"})

    async def _on_GetCompositeSchedule(self, p: dict[str, Any]) -> Reply:
        cid = int(p["connectorId"])
        conn = self.connectors.get(cid)
        if conn is None:
            return Reply({"status": "Rejected"})
        unit = p.get("chargingRateUnit") or "W"
        limit = conn.limit_w if conn.limit_w is not None else self.options.charger.max_power_w
        if unit == "A":
            limit = self.options.charger.watts_to_amps(limit)
        return Reply(
            {
                "status": "Accepted",
                "connectorId": cid,
                "scheduleStart": self._ts(),
                "chargingSchedule": {
                    "duration": int(p["duration"]),
                    "chargingRateUnit": unit,
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": round(limit, 1)}],
                },
            }
        )

    async def _on_GetConfiguration(self, p: dict[str, Any]) -> Reply:
        keys = p.get("key") or list(self.config)
        known = [
            {"key": k, "readonly": _CONFIG[k][1], "value": self.config[k]} for k in keys if k in self.config
        ]
        unknown = [k for k in keys if k not in self.config]
        out: dict[str, Any] = {"configurationKey": known}
        if unknown:
            out["unknownKey"] = unknown
        return Reply(out)

    async def _on_ChangeConfiguration(self, p: dict[str, Any]) -> Reply:
        if p["key"] == "AuthorizationKey":
            return self._change_authorization_key(str(p["value"]))
        return Reply({"status": self.change_configuration(str(p["key"]), str(p["value"]))})

    def _change_authorization_key(self, value: str) -> Reply:
        """1.6 security whitepaper: AuthorizationKey is write-only, the hex of a 16-20 byte password."""
        try:
            password = bytes.fromhex(value).decode()
        except ValueError:  # not hex, or not text (this simulator sends text passwords)
            return Reply({"status": "Rejected"})
        if not 16 <= len(password.encode()) <= 20 or not self.take_new_password(password):
            return Reply({"status": "Rejected"})
        return Reply({"status": "Accepted"}, then=self.reconnect_with_new_password)

    async def _on_TriggerMessage(self, p: dict[str, Any]) -> Reply:
        what = p["requestedMessage"]
        cid = p.get("connectorId")
        if what not in _TRIGGERABLE:
            return Reply({"status": "NotImplemented"})
        if cid is not None and cid != 0 and cid not in self.connectors:
            return Reply({"status": "Rejected"})

        async def then() -> None:
            conns = [self.connectors[cid]] if cid else list(self.connectors.values())
            if what == "BootNotification":
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
                    self._on_tx_sample(c, c.tx, "Trigger")
            elif what == "DiagnosticsStatusNotification" or what == "FirmwareStatusNotification":
                self._post(what, {"status": "Idle"})

        return Reply({"status": "Accepted"}, then)

    async def _on_Reset(self, p: dict[str, Any]) -> Reply:
        kind = str(p["type"])

        async def then() -> None:
            await self.reboot("HardReset" if kind == "Hard" else "SoftReset")

        return Reply({"status": "Accepted"}, then)

    async def _on_UnlockConnector(self, p: dict[str, Any]) -> Reply:
        conn = self.connectors.get(int(p["connectorId"]))
        if conn is None:
            return Reply({"status": "NotSupported"})
        if conn.tx is not None:
            async with conn.lock:
                await self._stop_tx(conn, "UnlockCommand", "UnlockCommand")
        ok = conn.hw.ev.unlock()
        return Reply({"status": "Unlocked" if ok else "UnlockFailed"})

    async def _on_ChangeAvailability(self, p: dict[str, Any]) -> Reply:
        cid = int(p["connectorId"])
        operative = p["type"] == "Operative"
        if cid != 0 and cid not in self.connectors:
            return Reply({"status": "Rejected"})
        targets = list(self.connectors.values()) if cid == 0 else [self.connectors[cid]]
        scheduled = False
        for c in targets:
            if c.tx is not None and not operative:
                c.pending_operative = operative
                scheduled = True
            else:
                c.operative = operative
                c.pending_operative = None

        async def then() -> None:
            if cid == 0:
                self._post(
                    "StatusNotification", self._status_payload(0, "Available" if operative else "Unavailable")
                )
            for c in targets:
                await self._refresh_status(c)

        return Reply({"status": "Scheduled" if scheduled else "Accepted"}, then)

    async def _on_DataTransfer(self, p: dict[str, Any]) -> Reply:
        self.data_transfers.append(p)
        self._pulse()
        return Reply({"status": "Accepted"})

    async def _on_ClearCache(self, p: dict[str, Any]) -> Reply:
        return Reply({"status": "Accepted"})

    async def _on_GetLocalListVersion(self, p: dict[str, Any]) -> Reply:
        return Reply({"listVersion": 0})

    async def _on_ReserveNow(self, p: dict[str, Any]) -> Reply:
        return Reply({"status": "Rejected"})

    async def _on_CancelReservation(self, p: dict[str, Any]) -> Reply:
        return Reply({"status": "Rejected"})


_STOP_REASONS = {
    "EmergencyStop",
    "EVDisconnected",
    "HardReset",
    "Local",
    "Other",
    "PowerLoss",
    "Reboot",
    "Remote",
    "SoftReset",
    "UnlockCommand",
    "DeAuthorized",
}
