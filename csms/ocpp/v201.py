"""The OCPP 2.0.1 adapter: 2.0.1 messages to charging-service facts, commands to 2.0.1 CALLs.

satwatt's ``connector_id`` is the 2.0.1 EVSE id (the unit that carries a transaction and a charging
profile); the EVSE's physical connector is kept as ``plug_id``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from csms.charging import commands as cmd
from csms.charging.events import Authorization, BootInfo, ConnectorStatus, MeterValue, TransactionMessage
from csms.charging.metering import normalise
from csms.ocpp.adapter import ProtocolAdapter
from csms.ocpp.rpc import HandlerResult

log = logging.getLogger("csms.ocpp.v201")

MEASURANDS = "Energy.Active.Import.Register,Power.Active.Import"
TOKEN_STATUSES = frozenset(
    {
        "Accepted",
        "Blocked",
        "ConcurrentTx",
        "Expired",
        "Invalid",
        "NoCredit",
        "NotAllowedTypeEVSE",
        "NotAtThisLocation",
        "NotAtThisTime",
        "Unknown",
    }
)
# Informational messages: recorded, answered with an empty confirmation.
RECORDED = {
    "ClearedChargingLimit": {},
    "FirmwareStatusNotification": {},
    "LogStatusNotification": {},
    "NotifyChargingLimit": {},
    "NotifyCustomerInformation": {},
    "NotifyDisplayMessages": {},
    "NotifyEvent": {},
    "NotifyMonitoringReport": {},
    "NotifyReport": {},
    "PublishFirmwareStatusNotification": {},
    "ReportChargingProfiles": {},
    "ReservationStatusUpdate": {},
    "SecurityEventNotification": {},
}


def _token_info(authorization: Authorization) -> dict[str, Any]:
    status = authorization.status if authorization.status in TOKEN_STATUSES else "Invalid"
    info: dict[str, Any] = {"status": status}
    if authorization.expires_at is not None:
        info["cacheExpiryDateTime"] = authorization.expires_at.isoformat().replace("+00:00", "Z")
    return info


def _final_register(values: tuple[MeterValue, ...]) -> int | None:
    """The register (integer Wh) an Ended event's meter values end on: the latest Transaction.End
    reading, else the latest reading with an energy register; None without one."""
    readings = [
        reading
        for value in values
        if (reading := normalise(value.timestamp, value.sampled_values)).energy_register_wh is not None
    ]
    final = [r for r in readings if r.context == "Transaction.End"] or readings
    if not final:
        return None
    reading = max(reversed(final), key=lambda r: r.timestamp)  # of equal timestamps, the last sent
    return reading.energy_register_wh


def _component_variable(key: str) -> dict[str, Any]:
    """``Component.Variable`` (or ``Component.Variable.Instance``) as a 2.0.1 component/variable pair."""
    component, _, rest = key.partition(".")
    variable, _, instance = rest.partition(".")
    pair: dict[str, Any] = {"component": {"name": component}, "variable": {"name": variable or component}}
    if instance:
        pair["variable"]["instance"] = instance
    return pair


class V201Adapter(ProtocolAdapter):
    version: ClassVar[str] = "2.0.1"
    inbound_actions: ClassVar[frozenset[str]] = frozenset(
        {
            "Authorize",
            "BootNotification",
            "DataTransfer",
            "Heartbeat",
            "MeterValues",
            "StatusNotification",
            "TransactionEvent",
            *RECORDED,
        }
    )

    async def handle(self, action: str, payload: dict[str, Any]) -> HandlerResult:
        if action in RECORDED:
            await self.service.record_message(self.charger_id, action, payload)
            return HandlerResult(dict(RECORDED[action]))
        return await super().handle(action, payload)

    # ----------------------------------------------------------------- inbound
    async def on_BootNotification(self, payload: dict[str, Any]) -> HandlerResult:
        station = payload["chargingStation"]
        info = BootInfo(
            vendor=station["vendorName"],
            model=station["model"],
            serial_number=station.get("serialNumber"),
            firmware_version=station.get("firmwareVersion"),
            reason=payload.get("reason"),
        )
        return await self.booted(info, payload)

    async def on_StatusNotification(self, payload: dict[str, Any]) -> HandlerResult:
        status = ConnectorStatus(
            connector_id=payload["evseId"],
            plug_id=payload["connectorId"],
            status=payload["connectorStatus"],
            timestamp=self.timestamp(payload),
        )
        await self.service.status_changed(self.charger_id, status)
        return HandlerResult({})

    async def on_Authorize(self, payload: dict[str, Any]) -> HandlerResult:
        authorization = await self.service.authorize(self.charger_id, payload["idToken"]["idToken"])
        return HandlerResult({"idTokenInfo": _token_info(authorization)})

    async def on_TransactionEvent(self, payload: dict[str, Any]) -> HandlerResult:
        info = payload["transactionInfo"]
        token = payload.get("idToken") or {}
        id_tag = token.get("idToken") or None
        if token.get("type") == "NoAuthorization":
            id_tag = None
        evse = payload.get("evse") or {}
        meter_values = self.meter_values(payload.get("meterValue"))
        ended = payload["eventType"] == "Ended"
        message = TransactionMessage(
            kind={"Started": "started", "Updated": "updated", "Ended": "ended"}[payload["eventType"]],  # type: ignore[arg-type]
            timestamp=self.timestamp(payload),
            payload=payload,
            protocol=self.version,
            ocpp_transaction_id=info["transactionId"],
            connector_id=evse.get("id"),
            id_tag=id_tag,
            meter_stop_wh=_final_register(meter_values) if ended else None,
            meter_values=meter_values,
            seq_no=payload["seqNo"],
            trigger_reason=payload["triggerReason"],
            offline=bool(payload.get("offline", False)),
            stop_reason=info.get("stoppedReason") if ended else None,
            remote_start_id=info.get("remoteStartId"),
        )
        outcome = await self.service.transaction(self.charger_id, message)
        response: dict[str, Any] = {}
        if outcome.authorization is not None:
            response["idTokenInfo"] = _token_info(outcome.authorization)
        if message.kind == "ended" and self.service.cost_of is not None:
            cost_msat = await self.service.cost_of(outcome.session_number)
            if cost_msat is not None:  # in sats, the unit of satwatt's tariffs
                response["totalCost"] = self.sats(cost_msat)
        return HandlerResult(response)

    async def on_MeterValues(self, payload: dict[str, Any]) -> HandlerResult:
        await self.service.meter_values(
            self.charger_id, payload["evseId"], None, self.meter_values(payload["meterValue"])
        )
        return HandlerResult({})

    # ---------------------------------------------------------------- outbound
    async def configure_after_boot(self) -> None:
        interval = self.meter_sample_interval_s
        reply = await self.call(
            "SetVariables",
            {
                "setVariableData": [
                    {
                        **_component_variable("SampledDataCtrlr.TxUpdatedInterval"),
                        "attributeValue": str(interval),
                    },
                    {
                        **_component_variable("SampledDataCtrlr.TxUpdatedMeasurands"),
                        "attributeValue": MEASURANDS,
                    },
                ]
            },
        )
        results = reply.get("setVariableResult", [])
        status = results[0]["attributeStatus"] if results else "Rejected"
        await self.service.meter_interval_configured(self.charger_id, interval, status)
        if status not in ("Accepted", "RebootRequired"):
            log.warning("%s refused TxUpdatedInterval=%s: %s", self.charger_id, interval, status)

    async def execute(self, command: cmd.Command) -> cmd.CommandResult:
        match command:
            case cmd.RemoteStart():
                request: dict[str, Any] = {
                    "idToken": {"idToken": command.id_tag, "type": "Central"},
                    "remoteStartId": command.remote_start_id or 1,
                }
                if command.connector_id is not None:
                    request["evseId"] = command.connector_id
                if command.power_limit_w is not None:
                    request["chargingProfile"] = self._profile(
                        command.remote_start_id or 1, command.power_limit_w, "TxProfile", None, 1
                    )
                reply = await self.call("RequestStartTransaction", request)
                return cmd.CommandResult(reply["status"], {"transaction_id": reply.get("transactionId")})
            case cmd.RemoteStop():
                reply = await self.call(
                    "RequestStopTransaction", {"transactionId": command.ocpp_transaction_id}
                )
            case cmd.SetPowerLimit():
                reply = await self.call(
                    "SetChargingProfile",
                    {
                        "evseId": command.connector_id,
                        "chargingProfile": self._profile(
                            command.profile_id,
                            command.limit_w,
                            command.ocpp_transaction_id,
                            command.stack_level,
                        ),
                    },
                )
            case cmd.ClearPowerLimit():
                request = {"chargingProfileId": command.profile_id}
                reply = await self.call("ClearChargingProfile", request)
            case cmd.GetConfiguration():
                if not command.keys:
                    reply = await self.call("GetBaseReport", {"requestId": 1, "reportBase": "FullInventory"})
                    return cmd.CommandResult(
                        reply["status"], {"values": [], "unknown": [], "note": "delivered as NotifyReport"}
                    )
                reply = await self.call(
                    "GetVariables", {"getVariableData": [_component_variable(k) for k in command.keys]}
                )
                values, unknown = [], []
                for key, result in zip(command.keys, reply.get("getVariableResult", []), strict=False):
                    if result["attributeStatus"] == "Accepted":
                        values.append({"key": key, "value": result.get("attributeValue"), "readonly": None})
                    else:
                        unknown.append(key)
                return cmd.CommandResult("Accepted", {"values": values, "unknown": unknown})
            case cmd.SetConfiguration():
                reply = await self.call(
                    "SetVariables",
                    {
                        "setVariableData": [
                            {**_component_variable(command.key), "attributeValue": command.value}
                        ]
                    },
                )
                results = reply.get("setVariableResult", [])
                return cmd.CommandResult(results[0]["attributeStatus"] if results else "Rejected", {})
            case cmd.TriggerMessage():
                request = {"requestedMessage": command.message}
                if command.connector_id is not None:
                    request["evse"] = {"id": command.connector_id}
                reply = await self.call("TriggerMessage", request)
            case cmd.Reset():
                reply = await self.call("Reset", {"type": "Immediate" if command.hard else "OnIdle"})
            case cmd.UnlockConnector():
                reply = await self.call("UnlockConnector", {"evseId": command.connector_id, "connectorId": 1})
            case cmd.ChangeAvailability():
                request = {"operationalStatus": "Operative" if command.operative else "Inoperative"}
                if command.connector_id:
                    request["evse"] = {"id": command.connector_id}
                reply = await self.call("ChangeAvailability", request)
            case cmd.DataTransfer():
                return await self.data_transfer(command)
            case cmd.CostUpdate():
                await self.call(
                    "CostUpdated",
                    {
                        "totalCost": self.sats(command.total_cost_msat),
                        "transactionId": command.ocpp_transaction_id,
                    },
                )
                return cmd.CommandResult("Accepted", {})
            case _:
                raise TypeError(f"unknown command {command!r}")
        return cmd.CommandResult(str(reply.get("status", "Accepted")), {})

    @staticmethod
    def _profile(
        profile_id: int, limit_w: int, transaction_id: str | None, stack_level: int
    ) -> dict[str, Any]:
        profile: dict[str, Any] = {
            "id": profile_id,
            "stackLevel": stack_level,
            "chargingProfilePurpose": "TxProfile" if transaction_id is not None else "TxDefaultProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": [
                {
                    "id": profile_id,
                    "chargingRateUnit": "W",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit_w}],
                }
            ],
        }
        if transaction_id is not None:
            profile["transactionId"] = transaction_id
        return profile
