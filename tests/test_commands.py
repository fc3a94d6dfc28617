"""satwatt-initiated commands through the REST API to library chargers of both versions."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from tests.conftest import RunningServer
from tests.ocpp_clients import at, connect_charger
from tests.test_ocpp16 import energy, register
from tests.test_ocpp201 import event, meter

VERSIONS = ["1.6", "2.0.1"]


async def command(api: httpx.AsyncClient, charger_id: str, body: dict[str, Any]) -> httpx.Response:
    return await api.post(f"/api/v1/chargers/{charger_id}/commands", json=body)


async def start_transaction(cp: Any, version: str, id_tag: str, remote_start_id: int | None) -> str:
    """Start the transaction the way a charger does after accepting a remote start."""
    if version == "1.6":
        reply = await cp.call(
            call16.StartTransaction(connector_id=1, id_tag=id_tag, meter_start=0, timestamp=at(0))
        )
        return str(reply.transaction_id)
    await cp.call(
        event(
            "Started",
            0,
            0,
            tx="REMOTE-TX",
            trigger="RemoteStart",
            id_token=id_tag,
            remote_start_id=remote_start_id,
            values=[meter(0, 0, 0, "Transaction.Begin")],
        )
    )
    return "REMOTE-TX"


@pytest.mark.parametrize("version", VERSIONS)
async def test_remote_start_charging_profile_and_remote_stop(
    server: RunningServer, api: httpx.AsyncClient, version: str
) -> None:
    charger_id = f"CP-remote-{version}"
    await register(api, charger_id)
    async with connect_charger(server.ocpp_url, charger_id, version) as cp:
        response = await command(api, charger_id, {"command": "remote_start", "connector_id": 1})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "Accepted"
        session_id = body["session_id"]
        pending = (await api.get(f"/api/v1/sessions/{session_id}")).json()
        assert pending["state"] == "pending" and pending["ocpp_transaction_id"] is None
        if version == "1.6":
            (request,) = cp.recorder.of("RemoteStartTransaction")
            id_tag, remote_start_id = request["idTag"], None
            assert request["connector_id"] == 1
        else:
            (request,) = cp.recorder.of("RequestStartTransaction")
            id_tag, remote_start_id = request["idToken"]["id_token"], request["remoteStartId"]
            assert request["evse_id"] == 1
        # the charger authorizes the tag satwatt gave it, then starts
        if version == "1.6":
            auth = await cp.call(call16.Authorize(id_tag=id_tag))
            assert auth.id_tag_info["status"] == "Accepted"
        tx = await start_transaction(cp, version, id_tag, remote_start_id)
        session = (await api.get(f"/api/v1/sessions/{session_id}")).json()
        assert session["state"] == "charging" and session["ocpp_transaction_id"] == tx

        limited = await command(
            api,
            charger_id,
            {
                "command": "set_power_limit",
                "connector_id": 1,
                "limit_w": 0,
                "profile_id": 7,
                "session_id": session_id,
            },
        )
        assert limited.json()["status"] == "Accepted"
        (profile_call,) = cp.recorder.of("SetChargingProfile")
        if version == "1.6":
            profile = profile_call["csChargingProfiles"]
            assert profile["charging_profile_purpose"] == "TxProfile"
            assert profile["transaction_id"] == int(tx)
            assert profile["charging_schedule"]["charging_schedule_period"][0]["limit"] == 0
        else:
            profile = profile_call["chargingProfile"]
            assert profile["charging_profile_purpose"] == "TxProfile" and profile["transaction_id"] == tx
            assert profile["charging_schedule"][0]["charging_schedule_period"][0]["limit"] == 0
        cleared = await command(api, charger_id, {"command": "clear_power_limit", "profile_id": 7})
        assert cleared.json()["status"] == "Accepted"
        assert cp.recorder.of("ClearChargingProfile")

        stopped = await command(api, charger_id, {"command": "remote_stop", "session_id": session_id})
        assert stopped.json()["status"] == "Accepted"
        if version == "1.6":
            assert cp.recorder.of("RemoteStopTransaction") == [{"transactionId": int(tx)}]
        else:
            assert cp.recorder.of("RequestStopTransaction") == [{"transactionId": tx}]


@pytest.mark.parametrize("version", VERSIONS)
async def test_rejected_remote_start_ends_the_session(
    server: RunningServer, api: httpx.AsyncClient, version: str
) -> None:
    charger_id = f"CP-busy-{version}"
    await register(api, charger_id)
    async with connect_charger(server.ocpp_url, charger_id, version) as cp:
        action = "RemoteStartTransaction" if version == "1.6" else "RequestStartTransaction"
        cp.recorder.replies[action] = "Rejected"
        body = (await command(api, charger_id, {"command": "remote_start", "connector_id": 1})).json()
        assert body["status"] == "Rejected"
        session = (await api.get(f"/api/v1/sessions/{body['session_id']}")).json()
        assert session["state"] == "ended" and session["stop_reason"] == "remote start Rejected"


@pytest.mark.parametrize("version", VERSIONS)
async def test_configuration_trigger_reset_unlock_availability(
    server: RunningServer, api: httpx.AsyncClient, version: str
) -> None:
    charger_id = f"CP-admin-{version}"
    await register(api, charger_id)
    async with connect_charger(server.ocpp_url, charger_id, version) as cp:
        key = "HeartbeatInterval" if version == "1.6" else "OCPPCommCtrlr.HeartbeatInterval"
        assert (
            await command(api, charger_id, {"command": "set_configuration", "key": key, "value": "120"})
        ).json()["status"] == "Accepted"
        read = (
            await command(api, charger_id, {"command": "get_configuration", "keys": [key, "Nope.Nope"]})
        ).json()
        assert read["data"]["values"][0]["key"] == key and read["data"]["values"][0]["value"] == "120"
        assert read["data"]["unknown"] == ["Nope.Nope"]
        trigger = await command(
            api,
            charger_id,
            {"command": "trigger_message", "message": "StatusNotification", "connector_id": 1},
        )
        assert trigger.json()["status"] == "Accepted"
        assert (await command(api, charger_id, {"command": "reset", "hard": True})).json()[
            "status"
        ] == "Accepted"
        assert cp.recorder.of("Reset") == [{"type": "Hard" if version == "1.6" else "Immediate"}]
        unlock = await command(api, charger_id, {"command": "unlock_connector", "connector_id": 1})
        assert unlock.json()["status"] == "Unlocked"
        availability = await command(api, charger_id, {"command": "change_availability", "operative": False})
        assert availability.json()["status"] == "Accepted"
        assert cp.recorder.of("ChangeAvailability")


async def test_command_failures_are_problems(server: RunningServer, api: httpx.AsyncClient) -> None:
    await register(api, "CP-fail")
    offline = await command(api, "CP-fail", {"command": "reset"})
    assert offline.status_code == 409 and offline.json()["reason"] == "not_connected"
    assert offline.headers["content-type"] == "application/problem+json"
    missing = await command(api, "CP-none", {"command": "reset"})
    assert missing.status_code == 404
    bad = await command(api, "CP-fail", {"command": "set_power_limit", "connector_id": 0, "limit_w": -1})
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {
        "set_power_limit.connector_id",
        "set_power_limit.limit_w",
    }
    async with connect_charger(server.ocpp_url, "CP-fail", "1.6") as cp:
        unsupported = await command(api, "CP-fail", {"command": "trigger_message", "message": "Coffee"})
        assert unsupported.status_code == 422 and unsupported.json()["reason"] == "invalid"
        cp.recorder.hold["Reset"] = asyncio.Event()  # the charger never answers in time
        timed_out = await command(api, "CP-fail", {"command": "reset"})
        assert timed_out.status_code == 504 and timed_out.json()["reason"] == "timeout"
        cp.recorder.hold["Reset"].set()
        # the connection still works afterwards
        assert (await cp.call(call16.Heartbeat())).current_time
        assert (
            await command(api, "CP-fail", {"command": "unlock_connector", "connector_id": 1})
        ).status_code == 200


async def test_charger_callerror_is_a_502(server: RunningServer, api: httpx.AsyncClient) -> None:
    await register(api, "CP-201-err")
    async with connect_charger(server.ocpp_url, "CP-201-err", "2.0.1") as cp:
        # the test charger has no handler for DataTransfer: the library answers NotImplemented
        response = await command(api, "CP-201-err", {"command": "data_transfer", "vendor_id": "x"})
        assert response.status_code == 502 and response.json()["reason"] == "call_error"
        assert "NotImplemented" in response.json()["detail"]
        assert (await cp.call(call201.Heartbeat())).current_time


async def test_meter_values_without_transaction_id_go_to_running_session(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    await register(api, "CP-notx")
    await api.post("/api/v1/id-tags", json={"id_tag": "CARD"})
    async with connect_charger(server.ocpp_url, "CP-notx", "1.6") as cp:
        start = await cp.call(
            call16.StartTransaction(connector_id=1, id_tag="CARD", meter_start=10, timestamp=at(0))
        )
        await cp.call(call16.MeterValues(connector_id=1, meter_value=[energy(70, 5000, 10)]))
        await cp.call(call16.MeterValues(connector_id=2, meter_value=[energy(999, 5000, 10)]))
    session = (await api.get("/api/v1/sessions", params={"charger_id": "CP-notx"})).json()[0]
    assert session["ocpp_transaction_id"] == str(start.transaction_id) and session["energy_wh"] == 60
