"""OCPP 2.0.1 end to end: a library ChargePoint over a real websocket against a running satwatt."""

from __future__ import annotations

from typing import Any

import httpx
from ocpp.v201 import call
from sqlalchemy import select

from csms.db.models import ChargerMessage
from tests.conftest import RunningServer
from tests.ocpp_clients import at, connect_charger
from tests.test_ocpp16 import register


def meter(
    register_wh: float, power_w: float, seconds: float, context: str = "Sample.Periodic", unit: str = "Wh"
) -> dict[str, Any]:
    return {
        "timestamp": at(seconds),
        "sampled_value": [
            {
                "value": register_wh,
                "measurand": "Energy.Active.Import.Register",
                "context": context,
                "unit_of_measure": {"unit": unit},
            },
            {"value": power_w, "measurand": "Power.Active.Import", "context": context},
        ],
    }


def event(
    kind: str,
    seq: int,
    seconds: float,
    tx: str = "TX-1",
    *,
    trigger: str = "MeterValuePeriodic",
    values: list[dict[str, Any]] | None = None,
    offline: bool | None = None,
    id_token: str | None = None,
    remote_start_id: int | None = None,
    stopped: str | None = None,
) -> call.TransactionEvent:
    info: dict[str, Any] = {"transaction_id": tx}
    if remote_start_id is not None:
        info["remote_start_id"] = remote_start_id
    if stopped is not None:
        info["stopped_reason"] = stopped
    return call.TransactionEvent(
        event_type=kind,
        timestamp=at(seconds),
        trigger_reason=trigger,
        seq_no=seq,
        transaction_info=info,
        meter_value=values,
        offline=offline,
        evse={"id": 1, "connector_id": 1},
        id_token={"id_token": id_token, "type": "ISO14443"} if id_token else None,
    )


async def boot(cp: Any) -> Any:
    return await cp.call(
        call.BootNotification(
            charging_station={
                "model": "DC Fast 150",
                "vendor_name": "Volt",
                "firmware_version": "2.0.1-b7",
                "serial_number": "V-77",
            },
            reason="PowerUp",
        )
    )


async def test_boot_sets_sampled_data_interval(server: RunningServer, api: httpx.AsyncClient) -> None:
    await register(api, "CP201-boot", "a-long-enough-secret")
    async with connect_charger(server.ocpp_url, "CP201-boot", "2.0.1", "a-long-enough-secret") as cp:
        reply = await boot(cp)
        assert reply.status == "Accepted"
        (set_variables,) = await cp.recorder.wait_for("SetVariables")
        assert cp.variables["SampledDataCtrlr.TxUpdatedInterval"] == "10"
        assert set_variables["setVariableData"][0]["attribute_value"] == "10"
        await cp.call(
            call.StatusNotification(timestamp=at(0), connector_status="Available", evse_id=1, connector_id=1)
        )
        await cp.call(call.Heartbeat())
        charger = (await api.get("/api/v1/chargers/CP201-boot")).json()
    assert charger["protocol"] == "2.0.1"
    assert (charger["vendor"], charger["model"], charger["firmware_version"]) == (
        "Volt",
        "DC Fast 150",
        "2.0.1-b7",
    )
    assert charger["meter_interval_status"] == "Accepted"
    assert charger["connectors"] == [
        {
            "connector_id": 1,
            "plug_id": 1,
            "status": "Available",
            "error_code": None,
            "info": None,
            "status_at": "2026-11-01T12:00:00Z",
        }
    ]


async def test_transaction_events_started_updated_ended(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    await register(api, "CP201-tx")
    await api.post("/api/v1/id-tags", json={"id_tag": "RFID-9"})
    async with connect_charger(server.ocpp_url, "CP201-tx", "2.0.1") as cp:
        await boot(cp)
        auth = await cp.call(call.Authorize(id_token={"id_token": "RFID-9", "type": "ISO14443"}))
        assert auth.id_token_info["status"] == "Accepted"
        started = await cp.call(
            event(
                "Started",
                0,
                0,
                trigger="Authorized",
                id_token="RFID-9",
                values=[meter(5000, 0, 0, "Transaction.Begin")],
            )
        )
        assert started.id_token_info["status"] == "Accepted"
        await cp.call(event("Updated", 1, 10, values=[meter(5040.9, 14500, 10)]))
        # 2.0.1 numbers with kWh and a multiplier: 5.1 kWh = 5100 Wh
        await cp.call(
            event(
                "Updated",
                2,
                20,
                values=[
                    meter(5.1, 14.5, 20, unit="kWh")
                    | {
                        "sampled_value": [
                            {
                                "value": 5.1,
                                "measurand": "Energy.Active.Import.Register",
                                "unit_of_measure": {"unit": "kWh"},
                            },
                            {
                                "value": 145,
                                "measurand": "Power.Active.Import",
                                "unit_of_measure": {"unit": "W", "multiplier": 2},
                            },
                        ]
                    }
                ],
            )
        )
        await cp.call(
            event(
                "Ended",
                3,
                30,
                trigger="EVCommunicationLost",
                stopped="EVDisconnected",
                values=[meter(5150, 0, 30, "Transaction.End")],
            )
        )
    session = (await api.get("/api/v1/sessions", params={"charger_id": "CP201-tx"})).json()[0]
    detail = (await api.get(f"/api/v1/sessions/{session['id']}")).json()
    assert detail["state"] == "ended"
    assert detail["ocpp_transaction_id"] == "TX-1"
    assert detail["id_tag"] == "RFID-9" and detail["connector_id"] == 1
    assert detail["energy_wh"] == 150
    assert detail["stop_reason"] == "EVDisconnected"
    assert [p["energy_wh"] for p in detail["meter_series"]] == [0, 40, 100, 150]
    assert [p["power_w"] for p in detail["meter_series"]] == [0, 14500, 14500, 0]


async def test_ended_final_register_is_the_sessions_meter_stop(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """2.0.1 has no meterStop: the session's meter_stop_wh is the Ended event's final energy register
    (its Transaction.End reading), in whole Wh whatever the unit and multiplier; an Ended event without
    an energy register leaves it None."""
    await register(api, "CP201-stop")
    kwh_milli = {  # 5678.9 Wh, sent as 5678.9 x 10^-3 kWh
        "timestamp": at(230),
        "sampled_value": [
            {
                "value": 5678.9,
                "measurand": "Energy.Active.Import.Register",
                "context": "Transaction.End",
                "unit_of_measure": {"unit": "kWh", "multiplier": -3},
            }
        ],
    }
    power_only = {
        "timestamp": at(330),
        "sampled_value": [{"value": 0, "measurand": "Power.Active.Import", "context": "Transaction.End"}],
    }
    async with connect_charger(server.ocpp_url, "CP201-stop", "2.0.1") as cp:
        await cp.call(event("Started", 0, 0, tx="WH", values=[meter(5000, 0, 0, "Transaction.Begin")]))
        await cp.call(
            event(
                "Ended",
                1,
                30,
                tx="WH",
                stopped="EVDisconnected",
                # a periodic sample sent with the Ended event: the Transaction.End one is the stop reading
                values=[meter(5100, 7000, 20), meter(5150.9, 0, 30, "Transaction.End")],
            )
        )
        begin = meter(5.2, 0, 100, "Transaction.Begin", unit="kWh")
        await cp.call(event("Started", 0, 100, tx="KWH", values=[begin]))
        end = meter(5.345, 0, 130, "Transaction.End", unit="kWh")
        await cp.call(event("Ended", 1, 130, tx="KWH", stopped="Local", values=[end]))
        begin = meter(5600, 0, 200, "Transaction.Begin")
        await cp.call(event("Started", 0, 200, tx="MILLI", values=[begin]))
        await cp.call(event("Ended", 1, 230, tx="MILLI", stopped="Local", values=[kwh_milli]))
        await cp.call(event("Started", 0, 300, tx="NONE", values=[meter(6000, 0, 300, "Transaction.Begin")]))
        await cp.call(event("Ended", 1, 330, tx="NONE", stopped="Local", values=[power_only]))
    sessions = (await api.get("/api/v1/sessions", params={"charger_id": "CP201-stop"})).json()
    by_tx = {s["ocpp_transaction_id"]: s for s in sessions}
    assert {tx: s["state"] for tx, s in by_tx.items()} == dict.fromkeys(
        ["WH", "KWH", "MILLI", "NONE"], "ended"
    )
    stops = {tx: (s["meter_start_wh"], s["meter_stop_wh"], s["energy_wh"]) for tx, s in by_tx.items()}
    assert stops == {
        "WH": (5000, 5150, 150),  # 5150.9 Wh: a Wh not yet completed is not delivered
        "KWH": (5200, 5345, 145),
        "MILLI": (5600, 5678, 78),
        "NONE": (6000, None, 0),
    }
    detail = (await api.get(f"/api/v1/sessions/{by_tx['KWH']['id']}")).json()
    assert detail["meter_stop_wh"] == 5345


async def test_duplicate_seqno_counts_once_and_ended_is_final(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    await register(api, "CP201-dup")
    async with connect_charger(server.ocpp_url, "CP201-dup", "2.0.1") as cp:
        await cp.call(event("Started", 0, 0, values=[meter(100, 0, 0, "Transaction.Begin")]))
        update = event("Updated", 1, 10, values=[meter(160, 7000, 10)])
        await cp.call(update)
        await cp.call(update)
        await cp.call(event("Ended", 2, 20, values=[meter(200, 0, 20, "Transaction.End")]))
        # replayed after Ended: kept, but the transaction does not come back to life
        await cp.call(event("Updated", 3, 25, values=[meter(400, 7000, 25)]))
        await cp.call(event("Started", 0, 0, values=[meter(100, 0, 0, "Transaction.Begin")]))
    sessions = (await api.get("/api/v1/sessions", params={"charger_id": "CP201-dup"})).json()
    assert len(sessions) == 1
    detail = (await api.get(f"/api/v1/sessions/{sessions[0]['id']}")).json()
    assert detail["state"] == "ended" and detail["energy_wh"] == 100
    assert [(p["energy_wh"], p["after_end"]) for p in detail["meter_series"]] == [
        (0, False),
        (60, False),
        (100, False),
        (300, True),
    ]


async def test_offline_replay_out_of_order(server: RunningServer, api: httpx.AsyncClient) -> None:
    """Events queued while offline arrive with offline=true; a late Started lowers the start reading."""
    await register(api, "CP201-offline")
    async with connect_charger(server.ocpp_url, "CP201-offline", "2.0.1") as cp:
        await cp.call(event("Updated", 1, 10, offline=True, values=[meter(1050, 6000, 10)]))
        await cp.call(event("Started", 0, 0, offline=True, values=[meter(1000, 0, 0, "Transaction.Begin")]))
        await cp.call(event("Updated", 2, 20, offline=True, values=[meter(1110, 6000, 20)]))
        await cp.call(event("Ended", 3, 30, values=[meter(1150, 0, 30, "Transaction.End")]))
    session = (await api.get("/api/v1/sessions", params={"charger_id": "CP201-offline"})).json()[0]
    assert session["energy_wh"] == 150
    assert session["offline_events"] == 3
    assert session["started_at"].startswith("2026-11-01T12:00:00")


async def test_reports_events_and_security_notifications_are_persisted(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    await register(api, "CP201-info")
    async with connect_charger(server.ocpp_url, "CP201-info", "2.0.1") as cp:
        await cp.call(
            call.NotifyReport(
                request_id=1,
                generated_at=at(0),
                seq_no=0,
                report_data=[
                    {
                        "component": {"name": "SampledDataCtrlr"},
                        "variable": {"name": "TxUpdatedInterval"},
                        "variable_attribute": [{"value": "10"}],
                    }
                ],
            )
        )
        await cp.call(
            call.NotifyEvent(
                generated_at=at(1),
                seq_no=0,
                event_data=[
                    {
                        "event_id": 1,
                        "timestamp": at(1),
                        "trigger": "Alerting",
                        "actual_value": "true",
                        "event_notification_type": "HardWiredNotification",
                        "component": {"name": "EVSE"},
                        "variable": {"name": "Problem"},
                    }
                ],
            )
        )
        await cp.call(call.SecurityEventNotification(type="FirmwareUpdated", timestamp=at(2)))
        await cp.call(call.FirmwareStatusNotification(status="Installed"))
        transfer = await cp.call(call.DataTransfer(vendor_id="com.example", message_id="hello", data="x"))
        assert transfer.status == "UnknownVendorId"
    app = server.app
    async with app.state.service.db() as db:
        actions = [
            m.action
            for m in await db.scalars(
                select(ChargerMessage)
                .where(ChargerMessage.charger_id == "CP201-info")
                .order_by(ChargerMessage.id)
            )
        ]
    assert actions == [
        "NotifyReport",
        "NotifyEvent",
        "SecurityEventNotification",
        "FirmwareStatusNotification",
        "DataTransfer",
    ]
