"""The OCPP 1.6J adapter: 1.6 messages to charging-service facts, commands to 1.6 CALLs."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from csms import jsoncodec
from csms.charging import commands as cmd
from csms.charging.events import Authorization, BootInfo, ConnectorStatus, TransactionMessage
from csms.ocpp.adapter import ProtocolAdapter
from csms.ocpp.rpc import HandlerResult

log = logging.getLogger("csms.ocpp.v16")

MEASURANDS = "Energy.Active.Import.Register,Power.Active.Import"
COST_VENDOR = "org.openchargealliance.costmsg"


def _id_tag_info(authorization: Authorization) -> dict[str, Any]:
    info: dict[str, Any] = {"status": authorization.status}
    if authorization.status not in ("Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"):
        info["status"] = "Invalid"
    if authorization.expires_at is not None:
        info["expiryDate"] = authorization.expires_at.isoformat().replace("+00:00", "Z")
    if authorization.parent_id_tag:
        info["parentIdTag"] = authorization.parent_id_tag[:20]
    return info


class V16Adapter(ProtocolAdapter):
    version: ClassVar[str] = "1.6"
    inbound_actions: ClassVar[frozenset[str]] = frozenset(
        {
            "Authorize",
            "BootNotification",
            "DataTransfer",
            "DiagnosticsStatusNotification",
            "FirmwareStatusNotification",
            "Heartbeat",
            "MeterValues",
            "StartTransaction",
            "StatusNotification",
            "StopTransaction",
        }
    )

    # ----------------------------------------------------------------- inbound
    async def on_BootNotification(self, payload: dict[str, Any]) -> HandlerResult:
        info = BootInfo(
            vendor=payload["chargePointVendor"],
            model=payload["chargePointModel"],
            serial_number=payload.get("chargePointSerialNumber") or payload.get("chargeBoxSerialNumber"),
            firmware_version=payload.get("firmwareVersion"),
        )
        return await self.booted(info, payload)

    async def on_StatusNotification(self, payload: dict[str, Any]) -> HandlerResult:
        status = ConnectorStatus(
            connector_id=payload["connectorId"],
            status=payload["status"],
            timestamp=self.timestamp(payload) if "timestamp" in payload else None,
            error_code=payload["errorCode"],
            info=payload.get("info") or payload.get("vendorErrorCode"),
        )
        await self.service.status_changed(self.charger_id, status)
        return HandlerResult({})

    async def on_Authorize(self, payload: dict[str, Any]) -> HandlerResult:
        authorization = await self.service.authorize(self.charger_id, payload["idTag"])
        return HandlerResult({"idTagInfo": _id_tag_info(authorization)})

    async def on_StartTransaction(self, payload: dict[str, Any]) -> HandlerResult:
        timestamp = self.timestamp(payload)
        fingerprint = "|".join(str(payload[k]) for k in ("connectorId", "idTag", "timestamp", "meterStart"))
        outcome = await self.service.transaction(
            self.charger_id,
            TransactionMessage(
                kind="started",
                timestamp=timestamp,
                payload=payload,
                protocol=self.version,
                connector_id=payload["connectorId"],
                id_tag=payload["idTag"],
                meter_start_wh=payload["meterStart"],
                fingerprint=fingerprint,
            ),
        )
        authorization = outcome.authorization or Authorization("Invalid")
        return HandlerResult(
            {"transactionId": int(outcome.ocpp_transaction_id), "idTagInfo": _id_tag_info(authorization)}
        )

    async def on_StopTransaction(self, payload: dict[str, Any]) -> HandlerResult:
        outcome = await self.service.transaction(
            self.charger_id,
            TransactionMessage(
                kind="ended",
                timestamp=self.timestamp(payload),
                payload=payload,
                protocol=self.version,
                ocpp_transaction_id=str(payload["transactionId"]),
                id_tag=payload.get("idTag"),
                meter_stop_wh=payload["meterStop"],
                meter_values=self.meter_values(payload.get("transactionData")),
                stop_reason=payload.get("reason", "Local"),
            ),
        )
        if outcome.authorization is None:
            return HandlerResult({})
        return HandlerResult({"idTagInfo": _id_tag_info(outcome.authorization)})

    async def on_MeterValues(self, payload: dict[str, Any]) -> HandlerResult:
        transaction_id = payload.get("transactionId")
        await self.service.meter_values(
            self.charger_id,
            payload["connectorId"],
            str(transaction_id) if transaction_id is not None else None,
            self.meter_values(payload["meterValue"]),
        )
        return HandlerResult({})

    async def on_DiagnosticsStatusNotification(self, payload: dict[str, Any]) -> HandlerResult:
        await self.service.record_message(self.charger_id, "DiagnosticsStatusNotification", payload)
        return HandlerResult({})

    async def on_FirmwareStatusNotification(self, payload: dict[str, Any]) -> HandlerResult:
        await self.service.record_message(self.charger_id, "FirmwareStatusNotification", payload)
        return HandlerResult({})

    # ---------------------------------------------------------------- outbound
    async def configure_after_boot(self) -> None:
        interval = self.meter_sample_interval_s
        result = await self.execute(cmd.SetConfiguration("MeterValueSampleInterval", str(interval)))
        await self.service.meter_interval_configured(self.charger_id, interval, result.status)
        if result.status not in ("Accepted", "RebootRequired"):
            log.warning(
                "%s refused MeterValueSampleInterval=%s: %s", self.charger_id, interval, result.status
            )
        measurands = await self.execute(cmd.SetConfiguration("MeterValuesSampledData", MEASURANDS))
        if measurands.status not in ("Accepted", "RebootRequired"):
            log.info("%s keeps its own MeterValuesSampledData (%s)", self.charger_id, measurands.status)

    async def execute(self, command: cmd.Command) -> cmd.CommandResult:
        match command:
            case cmd.RemoteStart():
                request: dict[str, Any] = {"idTag": command.id_tag}
                if command.connector_id is not None:
                    request["connectorId"] = command.connector_id
                if command.power_limit_w is not None:
                    request["chargingProfile"] = self._profile(
                        command.remote_start_id or 1, command.power_limit_w, "TxProfile", None
                    )
                reply = await self.call("RemoteStartTransaction", request)
            case cmd.RemoteStop():
                reply = await self.call(
                    "RemoteStopTransaction", {"transactionId": int(command.ocpp_transaction_id)}
                )
            case cmd.SetPowerLimit():
                purpose = "TxProfile" if command.ocpp_transaction_id is not None else "TxDefaultProfile"
                profile = self._profile(
                    command.profile_id,
                    command.limit_w,
                    purpose,
                    command.ocpp_transaction_id,
                    command.stack_level,
                )
                reply = await self.call(
                    "SetChargingProfile",
                    {"connectorId": command.connector_id, "csChargingProfiles": profile},
                )
            case cmd.ClearPowerLimit():
                request = {"id": command.profile_id}
                if command.connector_id is not None:
                    request["connectorId"] = command.connector_id
                reply = await self.call("ClearChargingProfile", request)
            case cmd.GetConfiguration():
                request = {"key": list(command.keys)} if command.keys else {}
                reply = await self.call("GetConfiguration", request)
                values = [
                    {"key": e["key"], "value": e.get("value"), "readonly": e.get("readonly", False)}
                    for e in reply.get("configurationKey", [])
                ]
                return cmd.CommandResult(
                    "Accepted", {"values": values, "unknown": reply.get("unknownKey", [])}
                )
            case cmd.SetConfiguration():
                reply = await self.call("ChangeConfiguration", {"key": command.key, "value": command.value})
            case cmd.TriggerMessage():
                request = {"requestedMessage": command.message}
                if command.connector_id is not None:
                    request["connectorId"] = command.connector_id
                reply = await self.call("TriggerMessage", request)
            case cmd.Reset():
                reply = await self.call("Reset", {"type": "Hard" if command.hard else "Soft"})
            case cmd.UnlockConnector():
                reply = await self.call("UnlockConnector", {"connectorId": command.connector_id})
            case cmd.ChangeAvailability():
                reply = await self.call(
                    "ChangeAvailability",
                    {
                        "connectorId": command.connector_id or 0,
                        "type": "Operative" if command.operative else "Inoperative",
                    },
                )
            case cmd.DataTransfer():
                return await self.data_transfer(command)
            case cmd.CostUpdate():  # the OCA cost message, which 1.6 chargers may or may not know
                data = {
                    "transactionId": int(command.ocpp_transaction_id),
                    "cost": self.sats(command.total_cost_msat),
                    "meterValue": command.energy_wh,
                    "state": "Charging",
                }
                return await self.data_transfer(
                    cmd.DataTransfer(COST_VENDOR, "RunningCost", jsoncodec.dumps(data))
                )
            case _:
                raise TypeError(f"unknown command {command!r}")
        return cmd.CommandResult(str(reply.get("status", "Accepted")), {})

    @staticmethod
    def _profile(
        profile_id: int, limit_w: int, purpose: str, transaction_id: str | None, stack_level: int = 1
    ) -> dict[str, Any]:
        profile: dict[str, Any] = {
            "chargingProfileId": profile_id,
            "stackLevel": stack_level,
            "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Relative",
            "chargingSchedule": {
                "chargingRateUnit": "W",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit_w}],
            },
        }
        if transaction_id is not None:
            profile["transactionId"] = int(transaction_id)
        return profile
