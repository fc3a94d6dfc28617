"""OCPP 1.6J end to end: a library ChargePoint over a real websocket against a running satwatt."""

from __future__ import annotations

from typing import Any

import httpx
from ocpp.v16 import call

from tests.conftest import RunningServer
from tests.ocpp_clients import at, connect_charger


async def register(api: httpx.AsyncClient, charger_id: str, password: str | None = None) -> None:
    body: dict[str, Any] = {"id": charger_id}
    if password:
        body["password"] = password
    response = await api.post("/api/v1/chargers", json=body)
    assert response.status_code == 201, response.text


def energy(register_wh: int, power_w: int, seconds: float) -> dict[str, Any]:
    return {
        "timestamp": at(seconds),
        "sampledValue": [
            {
                "value": str(register_wh),
                "measurand": "Energy.Active.Import.Register",
                "unit": "Wh",
                "context": "Sample.Periodic",
            },
            {
                "value": str(power_w),
                "measurand": "Power.Active.Import",
                "unit": "W",
                "context": "Sample.Periodic",
            },
        ],
    }


async def test_boot_configures_meter_interval_and_shows_charger(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    await register(api, "CP16-boot", "correct-horse-battery")
    async with connect_charger(server.ocpp_url, "CP16-boot", "1.6", "correct-horse-battery") as cp:
        boot = await cp.call(
            call.BootNotification(
                charge_point_vendor="Acme",
                charge_point_model="Wallbox 22",
                firmware_version="1.2.3",
                charge_point_serial_number="SN-1",
            )
        )
        assert boot.status == "Accepted"
        assert boot.interval == server.settings.heartbeat_interval_s
        changes = await cp.recorder.wait_for("ChangeConfiguration", 2)
        assert {"key": "MeterValueSampleInterval", "value": "10"} in changes
        await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
        heartbeat = await cp.call(call.Heartbeat())
        assert heartbeat.current_time
        charger = (await api.get("/api/v1/chargers/CP16-boot")).json()
    assert charger["connection_state"] == "connected"
    assert charger["protocol"] == "1.6"
    assert (charger["vendor"], charger["model"], charger["firmware_version"]) == (
        "Acme",
        "Wallbox 22",
        "1.2.3",
    )
    assert charger["serial_number"] == "SN-1"
    assert charger["meter_interval_s"] == 10 and charger["meter_interval_status"] == "Accepted"
    assert charger["connectors"][0]["connector_id"] == 1
    assert charger["connectors"][0]["status"] == "Available"
    assert charger["last_message_at"] is not None
    after = (await api.get("/api/v1/chargers/CP16-boot")).json()
    assert after["connection_state"] == "disconnected"


async def test_authorize_accepts_registered_tags_only(server: RunningServer, api: httpx.AsyncClient) -> None:
    await register(api, "CP16-auth")
    assert (await api.post("/api/v1/id-tags", json={"id_tag": "CARD-1"})).status_code == 201
    assert (
        await api.post("/api/v1/id-tags", json={"id_tag": "CARD-2", "status": "Blocked"})
    ).status_code == 201
    async with connect_charger(server.ocpp_url, "CP16-auth", "1.6") as cp:
        known = await cp.call(call.Authorize(id_tag="CARD-1"))
        blocked = await cp.call(call.Authorize(id_tag="CARD-2"))
        unknown = await cp.call(call.Authorize(id_tag="NOBODY"))
    assert known.id_tag_info["status"] == "Accepted"
    assert blocked.id_tag_info["status"] == "Blocked"
    assert unknown.id_tag_info["status"] == "Invalid"


async def test_full_transaction_with_meter_values(server: RunningServer, api: httpx.AsyncClient) -> None:
    await register(api, "CP16-tx")
    await api.post("/api/v1/id-tags", json={"id_tag": "CARD-1"})
    async with connect_charger(server.ocpp_url, "CP16-tx", "1.6") as cp:
        start = await cp.call(
            call.StartTransaction(connector_id=1, id_tag="CARD-1", meter_start=1000, timestamp=at(0))
        )
        assert start.id_tag_info["status"] == "Accepted"
        tx = start.transaction_id
        for i, register_wh in enumerate((1030, 1061, 1093), start=1):
            await cp.call(
                call.MeterValues(
                    connector_id=1, transaction_id=tx, meter_value=[energy(register_wh, 11000, 10 * i)]
                )
            )
        listing = (
            await api.get("/api/v1/sessions", params={"charger_id": "CP16-tx", "state": "charging"})
        ).json()
        assert len(listing) == 1 and listing[0]["energy_wh"] == 93 and listing[0]["power_w"] == 11000
        stop = await cp.call(
            call.StopTransaction(
                meter_stop=1120,
                timestamp=at(45),
                transaction_id=tx,
                reason="EVDisconnected",
                id_tag="CARD-1",
                transaction_data=[energy(1110, 9000, 40)],
            )
        )
        assert stop.id_tag_info["status"] == "Accepted"
    session = (await api.get(f"/api/v1/sessions/{listing[0]['id']}")).json()
    assert session["state"] == "ended"
    assert session["ocpp_transaction_id"] == str(tx)
    assert (session["charger_id"], session["connector_id"], session["id_tag"]) == ("CP16-tx", 1, "CARD-1")
    assert session["energy_wh"] == 120
    assert session["meter_start_wh"] == 1000 and session["meter_stop_wh"] == 1120
    assert session["stop_reason"] == "EVDisconnected"
    assert session["started_at"].startswith("2026-11-01T12:00:00")
    assert [p["energy_wh"] for p in session["meter_series"]] == [30, 61, 93, 110]
    assert [p["power_w"] for p in session["meter_series"]] == [11000, 11000, 11000, 9000]


async def test_retried_messages_are_idempotent(server: RunningServer, api: httpx.AsyncClient) -> None:
    await register(api, "CP16-retry")
    await api.post("/api/v1/id-tags", json={"id_tag": "CARD-1"})
    async with connect_charger(server.ocpp_url, "CP16-retry", "1.6") as cp:
        request = call.StartTransaction(connector_id=1, id_tag="CARD-1", meter_start=500, timestamp=at(0))
        first = await cp.call(request)
        again = await cp.call(request)
        assert again.transaction_id == first.transaction_id
        values = call.MeterValues(
            connector_id=1, transaction_id=first.transaction_id, meter_value=[energy(550, 7000, 10)]
        )
        await cp.call(values)
        await cp.call(values)
        stop = call.StopTransaction(meter_stop=600, timestamp=at(20), transaction_id=first.transaction_id)
        await cp.call(stop)
        await cp.call(stop)
        # An unknown transaction is acknowledged and recorded, not refused.
        unknown = await cp.call(call.StopTransaction(meter_stop=42, timestamp=at(30), transaction_id=987654))
        assert unknown is not None
    sessions = (await api.get("/api/v1/sessions", params={"charger_id": "CP16-retry"})).json()
    by_tx = {s["ocpp_transaction_id"]: s for s in sessions}
    assert set(by_tx) == {str(first.transaction_id), "987654"}
    assert by_tx[str(first.transaction_id)]["energy_wh"] == 100
    assert by_tx["987654"]["state"] == "ended" and by_tx["987654"]["meter_stop_wh"] == 42
    detail = (await api.get(f"/api/v1/sessions/{by_tx[str(first.transaction_id)]['id']}")).json()
    assert len(detail["meter_series"]) == 1


async def test_late_and_out_of_order_samples_are_kept_without_changing_closed_total(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    await register(api, "CP16-late")
    await api.post("/api/v1/id-tags", json={"id_tag": "CARD-1"})
    async with connect_charger(server.ocpp_url, "CP16-late", "1.6") as cp:
        start = await cp.call(
            call.StartTransaction(connector_id=1, id_tag="CARD-1", meter_start=0, timestamp=at(0))
        )
        tx = start.transaction_id
        await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[energy(300, 1, 30)]))
        await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[energy(100, 1, 10)]))
        await cp.call(call.StopTransaction(meter_stop=400, timestamp=at(40), transaction_id=tx))
        await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[energy(900, 1, 50)]))
    session = (await api.get("/api/v1/sessions", params={"charger_id": "CP16-late"})).json()[0]
    detail = (await api.get(f"/api/v1/sessions/{session['id']}")).json()
    assert detail["energy_wh"] == 400
    assert [(p["energy_wh"], p["after_end"]) for p in detail["meter_series"]] == [
        (100, False),
        (300, False),
        (900, True),
    ]


async def test_reconnect_mid_transaction_continues_the_session(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    await register(api, "CP16-reconnect")
    await api.post("/api/v1/id-tags", json={"id_tag": "CARD-1"})
    async with connect_charger(server.ocpp_url, "CP16-reconnect", "1.6") as cp:
        start = await cp.call(
            call.StartTransaction(connector_id=1, id_tag="CARD-1", meter_start=0, timestamp=at(0))
        )
        await cp.call(
            call.MeterValues(
                connector_id=1, transaction_id=start.transaction_id, meter_value=[energy(50, 3000, 10)]
            )
        )
    async with connect_charger(server.ocpp_url, "CP16-reconnect", "1.6") as cp:
        await cp.call(call.BootNotification(charge_point_vendor="Acme", charge_point_model="X"))
        await cp.call(
            call.MeterValues(
                connector_id=1, transaction_id=start.transaction_id, meter_value=[energy(80, 3000, 20)]
            )
        )
        await cp.call(
            call.StopTransaction(meter_stop=90, timestamp=at(30), transaction_id=start.transaction_id)
        )
    sessions = (await api.get("/api/v1/sessions", params={"charger_id": "CP16-reconnect"})).json()
    assert len(sessions) == 1
    assert sessions[0]["energy_wh"] == 90 and sessions[0]["state"] == "ended"
