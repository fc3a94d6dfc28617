"""Test chargers: the ``ocpp`` library's ChargePoint (1.6 and 2.0.1) over real websockets, plus a raw
OCPP-J client for sending malformed frames."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def at(seconds: float) -> str:
    return iso(T0 + timedelta(seconds=seconds))


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Recorder:
    """What the central system asked of a test charger, and what it should answer."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.arrived = asyncio.Condition()
        self.replies: dict[str, str] = {}  # action -> status to answer
        self.hold: dict[str, asyncio.Event] = {}  # action -> released before answering

    async def record(self, action: str, payload: dict[str, Any]) -> str:
        async with self.arrived:
            self.calls.append((action, payload))
            self.arrived.notify_all()
        if action in self.hold:
            await self.hold[action].wait()
        return self.replies.get(action, "Accepted")

    async def wait_for(self, action: str, count: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: len(self.of(action)) >= count)
        return self.of(action)

    def of(self, action: str) -> list[dict[str, Any]]:
        return [payload for name, payload in self.calls if name == action]


class Charger16(ChargePoint16):
    def __init__(self, charger_id: str, connection: Any) -> None:
        super().__init__(charger_id, connection, response_timeout=15)
        self.recorder = Recorder()
        self.config = {
            "MeterValueSampleInterval": "60",
            "MeterValuesSampledData": "Energy.Active.Import.Register",
        }

    @on(Action16.change_configuration)
    async def _change_configuration(self, key: str, value: str) -> Any:
        status = await self.recorder.record("ChangeConfiguration", {"key": key, "value": value})
        if status == "Accepted":
            self.config[key] = value
        return result16.ChangeConfiguration(status=status)

    @on(Action16.get_configuration)
    async def _get_configuration(self, key: list[str] | None = None) -> Any:
        await self.recorder.record("GetConfiguration", {"key": key})
        keys = key or list(self.config)
        known = [{"key": k, "readonly": False, "value": self.config[k]} for k in keys if k in self.config]
        unknown = [k for k in keys if k not in self.config]
        return result16.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action16.remote_start_transaction)
    async def _remote_start(self, id_tag: str, **rest: Any) -> Any:
        status = await self.recorder.record("RemoteStartTransaction", {"idTag": id_tag, **rest})
        return result16.RemoteStartTransaction(status=status)

    @on(Action16.remote_stop_transaction)
    async def _remote_stop(self, transaction_id: int) -> Any:
        status = await self.recorder.record("RemoteStopTransaction", {"transactionId": transaction_id})
        return result16.RemoteStopTransaction(status=status)

    @on(Action16.set_charging_profile)
    async def _set_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]) -> Any:
        status = await self.recorder.record(
            "SetChargingProfile", {"connectorId": connector_id, "csChargingProfiles": cs_charging_profiles}
        )
        return result16.SetChargingProfile(status=status)

    @on(Action16.clear_charging_profile)
    async def _clear_profile(self, **fields: Any) -> Any:
        status = await self.recorder.record("ClearChargingProfile", fields)
        return result16.ClearChargingProfile(status=status)

    @on(Action16.trigger_message)
    async def _trigger(self, requested_message: str, connector_id: int | None = None) -> Any:
        status = await self.recorder.record("TriggerMessage", {"requestedMessage": requested_message})
        return result16.TriggerMessage(status=status)

    @on(Action16.reset)
    async def _reset(self, type: str) -> Any:
        return result16.Reset(status=await self.recorder.record("Reset", {"type": type}))

    @on(Action16.unlock_connector)
    async def _unlock(self, connector_id: int) -> Any:
        status = await self.recorder.record("UnlockConnector", {"connectorId": connector_id})
        return result16.UnlockConnector(status="Unlocked" if status == "Accepted" else status)

    @on(Action16.change_availability)
    async def _availability(self, connector_id: int, type: str) -> Any:
        status = await self.recorder.record("ChangeAvailability", {"connectorId": connector_id, "type": type})
        return result16.ChangeAvailability(status=status)

    @on(Action16.data_transfer)
    async def _data_transfer(self, vendor_id: str, **rest: Any) -> Any:
        status = await self.recorder.record("DataTransfer", {"vendorId": vendor_id, **rest})
        return result16.DataTransfer(status=status)


class Charger201(ChargePoint201):
    def __init__(self, charger_id: str, connection: Any) -> None:
        super().__init__(charger_id, connection, response_timeout=15)
        self.recorder = Recorder()
        self.variables: dict[str, str] = {"SampledDataCtrlr.TxUpdatedInterval": "60"}

    @on(Action201.set_variables)
    async def _set_variables(self, set_variable_data: list[dict[str, Any]]) -> Any:
        status = await self.recorder.record("SetVariables", {"setVariableData": set_variable_data})
        results = []
        for item in set_variable_data:
            key = f"{item['component']['name']}.{item['variable']['name']}"
            if status == "Accepted":
                self.variables[key] = item["attribute_value"]
            results.append(
                {"attribute_status": status, "component": item["component"], "variable": item["variable"]}
            )
        return result201.SetVariables(set_variable_result=results)

    @on(Action201.get_variables)
    async def _get_variables(self, get_variable_data: list[dict[str, Any]]) -> Any:
        await self.recorder.record("GetVariables", {"getVariableData": get_variable_data})
        results = []
        for item in get_variable_data:
            key = f"{item['component']['name']}.{item['variable']['name']}"
            found = key in self.variables
            entry = {
                "attribute_status": "Accepted" if found else "UnknownVariable",
                "component": item["component"],
                "variable": item["variable"],
            }
            if found:
                entry["attribute_value"] = self.variables[key]
            results.append(entry)
        return result201.GetVariables(get_variable_result=results)

    @on(Action201.request_start_transaction)
    async def _request_start(self, id_token: dict[str, Any], remote_start_id: int, **rest: Any) -> Any:
        status = await self.recorder.record(
            "RequestStartTransaction", {"idToken": id_token, "remoteStartId": remote_start_id, **rest}
        )
        return result201.RequestStartTransaction(status=status)

    @on(Action201.request_stop_transaction)
    async def _request_stop(self, transaction_id: str) -> Any:
        status = await self.recorder.record("RequestStopTransaction", {"transactionId": transaction_id})
        return result201.RequestStopTransaction(status=status)

    @on(Action201.set_charging_profile)
    async def _set_profile(self, evse_id: int, charging_profile: dict[str, Any]) -> Any:
        status = await self.recorder.record(
            "SetChargingProfile", {"evseId": evse_id, "chargingProfile": charging_profile}
        )
        return result201.SetChargingProfile(status=status)

    @on(Action201.clear_charging_profile)
    async def _clear_profile(self, **fields: Any) -> Any:
        status = await self.recorder.record("ClearChargingProfile", fields)
        return result201.ClearChargingProfile(status=status)

    @on(Action201.trigger_message)
    async def _trigger(self, requested_message: str, **rest: Any) -> Any:
        status = await self.recorder.record("TriggerMessage", {"requestedMessage": requested_message})
        return result201.TriggerMessage(status=status)

    @on(Action201.reset)
    async def _reset(self, type: str, **rest: Any) -> Any:
        return result201.Reset(status=await self.recorder.record("Reset", {"type": type}))

    @on(Action201.unlock_connector)
    async def _unlock(self, evse_id: int, connector_id: int) -> Any:
        status = await self.recorder.record("UnlockConnector", {"evseId": evse_id})
        return result201.UnlockConnector(status="Unlocked" if status == "Accepted" else status)

    @on(Action201.change_availability)
    async def _availability(self, operational_status: str, **rest: Any) -> Any:
        status = await self.recorder.record("ChangeAvailability", {"operationalStatus": operational_status})
        return result201.ChangeAvailability(status=status)

    @on(Action201.get_base_report)
    async def _base_report(self, request_id: int, report_base: str) -> Any:
        status = await self.recorder.record("GetBaseReport", {"reportBase": report_base})
        return result201.GetBaseReport(status=status)


CLIENTS: dict[str, type[Any]] = {"1.6": Charger16, "2.0.1": Charger201}
SUBPROTOCOL = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}


@contextlib.asynccontextmanager
async def connect_charger(
    ocpp_url: str, charger_id: str, version: str, password: str | None = None
) -> AsyncIterator[Any]:
    """A library ChargePoint connected to satwatt, its read loop running."""
    headers = basic_auth(charger_id, password) if password else {}
    async with websockets.connect(
        f"{ocpp_url}/{charger_id}",
        subprotocols=[SUBPROTOCOL[version]],
        additional_headers=headers,
        open_timeout=10,
    ) as connection:
        assert connection.subprotocol == SUBPROTOCOL[version]
        charger = CLIENTS[version](charger_id, connection)
        task = asyncio.create_task(charger.start())
        try:
            yield charger
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await task


class RawClient:
    """Sends frames exactly as given and reads the central system's frames back."""

    def __init__(self, connection: websockets.ClientConnection) -> None:
        self.connection = connection

    async def send(self, frame: str | list[Any]) -> None:
        await self.connection.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def receive(self, timeout: float = 10) -> list[Any]:
        """The next frame that is not a CALL from the central system (those are answered Accepted)."""
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.connection.recv())
                if message[0] == 2:
                    await self.answer(message)
                    continue
                return message

    async def answer(self, message: list[Any]) -> None:
        action = message[2]
        if action == "SetVariables":
            results = [
                {"attributeStatus": "Accepted", "component": d["component"], "variable": d["variable"]}
                for d in message[3]["setVariableData"]
            ]
            await self.send([3, message[1], {"setVariableResult": results}])
        else:
            await self.send([3, message[1], {"status": "Accepted"}])

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        message_id = str(uuid.uuid4())
        await self.send([2, message_id, action, payload])
        reply = await self.receive()
        assert reply[1] == message_id, reply
        return reply


@contextlib.asynccontextmanager
async def raw_client(
    ocpp_url: str, charger_id: str, version: str, password: str | None = None
) -> AsyncIterator[RawClient]:
    headers = basic_auth(charger_id, password) if password else {}
    async with websockets.connect(
        f"{ocpp_url}/{charger_id}",
        subprotocols=[SUBPROTOCOL[version]],
        additional_headers=headers,
        open_timeout=10,
        max_size=None,
    ) as connection:
        yield RawClient(connection)
