"""Lightning settlement end to end: a library charger, satwatt, and payer nodes on the simnet, all over
real sockets (OCPP websockets, REST, server-sent events, gRPC with TLS and macaroons)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from ocpp.v16 import call as call16

from tests.conftest import RunningServer
from tests.ocpp_clients import at, connect_charger
from tests.sessions_helpers import follow_events, pay, payer_node
from tests.test_ocpp16 import energy, register
from tests.test_ocpp201 import event, meter

VERSIONS = ["1.6", "2.0.1"]
# 100 sat/kWh, 100 Wh increments: each increment invoice is 10 sat = 10_000 msat
TARIFF = {
    "name": "test",
    "price_msat_per_kwh": 100_000,
    "increment_wh": 100,
    "min_invoice_interval_s": 1,
    "allowance_wh": 50,
    "grace_s": 1,
    "stop_after_s": 3,
    "invoice_expiry_s": 600,
    "session_fee_msat": 0,
}


async def sell_at(api: httpx.AsyncClient, charger_id: str, **changes: Any) -> dict[str, Any]:
    tariff = (await api.post("/api/v1/tariffs", json=TARIFF | changes)).json()
    assert (
        await api.patch(f"/api/v1/chargers/{charger_id}", json={"tariff_id": tariff["id"]})
    ).status_code == 200
    return tariff


class Meter:
    """Sends a charger's meter values for one transaction, in either protocol."""

    def __init__(self, cp: Any, version: str, tx: str) -> None:
        self.cp, self.version, self.tx, self.seq, self.t = cp, version, tx, 0, 0

    async def send(self, register_wh: int, power_w: int = 11_000) -> None:
        self.t += 10
        if self.version == "1.6":
            await self.cp.call(
                call16.MeterValues(
                    connector_id=1,
                    transaction_id=int(self.tx),
                    meter_value=[energy(register_wh, power_w, self.t)],
                )
            )
        else:
            self.seq += 1
            await self.cp.call(
                event("Updated", self.seq, self.t, tx=self.tx, values=[meter(register_wh, power_w, self.t)])
            )

    async def stop(self, register_wh: int) -> Any:
        self.t += 10
        if self.version == "1.6":
            return await self.cp.call(
                call16.StopTransaction(
                    meter_stop=register_wh,
                    timestamp=at(self.t),
                    transaction_id=int(self.tx),
                    reason="EVDisconnected",
                )
            )
        self.seq += 1
        return await self.cp.call(
            event(
                "Ended",
                self.seq,
                self.t,
                tx=self.tx,
                trigger="EVCommunicationLost",
                stopped="EVDisconnected",
                values=[meter(register_wh, 0, self.t)],
            )
        )


async def start_remote(cp: Any, version: str) -> str:
    """Answer satwatt's remote start the way a charger does; returns the transaction id."""
    if version == "1.6":
        (request,) = await cp.recorder.wait_for("RemoteStartTransaction")
        reply = await cp.call(
            call16.StartTransaction(connector_id=1, id_tag=request["idTag"], meter_start=0, timestamp=at(0))
        )
        return str(reply.transaction_id)
    (request,) = await cp.recorder.wait_for("RequestStartTransaction")
    await cp.call(
        event(
            "Started",
            0,
            0,
            tx="PAID-TX",
            trigger="RemoteStart",
            id_token=request["idToken"]["id_token"],
            remote_start_id=request["remoteStartId"],
            values=[meter(0, 0, 0, "Transaction.Begin")],
        )
    )
    return "PAID-TX"


@pytest.mark.parametrize("version", VERSIONS)
async def test_walk_up_session_paid_increment_by_increment(
    server: RunningServer, api: httpx.AsyncClient, version: str
) -> None:
    charger_id = f"CP-sell-{version}"
    await register(api, charger_id)
    await sell_at(api, charger_id)
    simnet = server.app.state.lightning.simnet
    async with connect_charger(server.ocpp_url, charger_id, version) as cp, payer_node(simnet) as car:
        created = await httpx.AsyncClient(base_url=server.http_url).post(
            "/api/v1/sessions", json={"charger_id": charger_id, "connector_id": 1}
        )
        assert created.status_code == 201, created.text
        walk_up = created.json()
        assert walk_up["state"] == "awaiting_payment" and walk_up["sold"] is True
        first = walk_up["invoice"]
        assert (
            first["amount_msat"] == 10_000
            and first["energy_wh"] == 100
            and first["bolt11"].startswith("lnbcrt")
        )
        # nobody can tie up the connector without paying: no remote start before the first payment
        assert cp.recorder.of("RemoteStartTransaction") == cp.recorder.of("RequestStartTransaction") == []
        async with follow_events(server.http_url, walk_up["id"], walk_up["token"]) as events:
            assert (await events.next("invoice")).data["bolt11"] == first["bolt11"]
            await pay(car, first["bolt11"])
            assert (await events.next("paid")).data["key"] == first["key"]
            tx = await start_remote(cp, version)
            await events.next("started")
            metering = Meter(cp, version, tx)
            paid_invoices = 1
            for register_wh in (40, 60, 110, 160, 210, 260):
                await metering.send(register_wh)
                session = (await api.get(f"/api/v1/sessions/{walk_up['id']}")).json()
                if session["credit_wh"] < 50 and paid_invoices * 100 <= register_wh + 50:
                    invoice = (await events.next("invoice")).data
                    assert invoice["amount_msat"] == 10_000 and invoice["price_msat_per_kwh"] == 100_000
                    await pay(car, invoice["bolt11"])
                    await events.next("paid")
                    paid_invoices += 1
            session = (await api.get(f"/api/v1/sessions/{walk_up['id']}")).json()
            assert session["state"] == "charging" and session["credit_wh"] >= 0
            assert not events.of("suspended")
            final = await metering.stop(280)
            if version == "2.0.1":
                assert final.total_cost == 28  # sats: 280 Wh at 100 sat/kWh
            else:  # 1.6: the running cost goes out as the OCA cost DataTransfer after payments
                costs = await cp.recorder.wait_for("DataTransfer")
                assert costs[0]["vendorId"] == "org.openchargealliance.costmsg"
                assert costs[0]["message_id"] == "RunningCost"
                assert json.loads(costs[0]["data"])["transactionId"] == int(tx)
            closed = (await events.next("closed")).data
    session = (await api.get(f"/api/v1/sessions/{walk_up['id']}")).json()
    assert session["state"] == "ended" and session["outcome"] == "settled"
    assert session["energy_wh"] == 280 and session["cost_msat"] == 28_000
    assert session["paid_msat"] == paid_invoices * 10_000 == closed["paid_msat"]
    assert session["refundable_msat"] == session["paid_msat"] - 28_000
    invoices = (await api.get(f"/api/v1/sessions/{walk_up['id']}/invoices")).json()
    assert [i["status"] for i in invoices] == ["paid"] * paid_invoices
    assert all(i["energy_wh"] * i["price_msat_per_kwh"] // 1000 == i["amount_msat"] for i in invoices)


@pytest.mark.parametrize("version", VERSIONS)
async def test_non_payer_is_suspended_resumed_on_payment_then_stopped(
    server: RunningServer, api: httpx.AsyncClient, version: str
) -> None:
    charger_id = f"CP-cut-{version}"
    await register(api, charger_id)
    await sell_at(api, charger_id)
    payer = (await api.post("/api/v1/payers", json={"name": "Ann", "id_tags": ["ANN-CARD"]})).json()
    simnet = server.app.state.lightning.simnet
    async with connect_charger(server.ocpp_url, charger_id, version) as cp, payer_node(simnet, "car2") as car:
        # the driver badges in: the charger starts, and the payer's first invoice is issued
        if version == "1.6":
            start = await cp.call(
                call16.StartTransaction(connector_id=1, id_tag="ANN-CARD", meter_start=1000, timestamp=at(0))
            )
            assert start.id_tag_info["status"] == "Accepted"
            tx = str(start.transaction_id)
        else:
            await cp.call(
                event(
                    "Started",
                    0,
                    0,
                    tx="RFID-TX",
                    trigger="Authorized",
                    id_token="ANN-CARD",
                    values=[meter(1000, 0, 0, "Transaction.Begin")],
                )
            )
            tx = "RFID-TX"
        sessions = (
            await api.get("/api/v1/sessions", headers={"Authorization": f"Bearer {payer['token']}"})
        ).json()
        assert [s["charger_id"] for s in sessions] == [charger_id]
        session_id = sessions[0]["id"]
        async with follow_events(server.http_url, session_id, payer["token"]) as events:
            first = (await events.next("invoice")).data
            metering = Meter(cp, version, tx)
            # the car draws past the allowance without paying: power is cut (limit 0)
            await metering.send(1060, 7000)
            assert (await events.next("suspended")).data["how"] == "charging profile"
            (profile,) = await cp.recorder.wait_for("SetChargingProfile")
            assert (await api.get(f"/api/v1/sessions/{session_id}")).json()["state"] == "suspended"
            # it pays: power comes back
            await pay(car, first["bolt11"])
            await events.next("resumed")
            await cp.recorder.wait_for("ClearChargingProfile")
            assert (await api.get(f"/api/v1/sessions/{session_id}")).json()["state"] == "charging"
            # it stops paying: cut again, and after stop_after_s the transaction is stopped
            await metering.send(1160, 7000)
            await events.next("suspended")
            await events.next("stopping")
            stop = "RemoteStopTransaction" if version == "1.6" else "RequestStopTransaction"
            await cp.recorder.wait_for(stop)
            await metering.stop(1170)
            # the shortfall (170 Wh delivered, 100 Wh paid) gets a final invoice
            final = (await events.next("invoice")).data
            assert final["kind"] == "final" and final["energy_wh"] == 70 and final["amount_msat"] == 7_000
            ending = (await api.get(f"/api/v1/sessions/{session_id}")).json()
            assert ending["state"] == "awaiting_payment_final" and ending["unpaid_msat"] == 7_000
            await pay(car, final["bolt11"])
            closed = (await events.next("closed")).data
    session = (await api.get(f"/api/v1/sessions/{session_id}")).json()
    assert closed["outcome"] == "settled" and session["state"] == "ended"
    assert session["energy_wh"] == 170 and session["cost_msat"] == 17_000 and session["paid_msat"] == 17_000
    invoices = (await api.get(f"/api/v1/sessions/{session_id}/invoices")).json()
    assert [(i["kind"], i["status"]) for i in invoices] == [
        ("increment", "paid"),
        ("increment", "canceled"),
        ("final", "paid"),
    ]
    profile_limit = (
        profile["csChargingProfiles"]["charging_schedule"]["charging_schedule_period"][0]["limit"]
        if version == "1.6"
        else profile["chargingProfile"]["charging_schedule"][0]["charging_schedule_period"][0]["limit"]
    )
    assert profile_limit == 0


async def test_a_charger_that_rejects_profiles_is_stopped_instead(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    await register(api, "CP-noprofile")
    await sell_at(api, "CP-noprofile")
    await api.post("/api/v1/payers", json={"name": "Cy", "id_tags": ["CY-CARD"]})
    async with connect_charger(server.ocpp_url, "CP-noprofile", "1.6") as cp:
        cp.recorder.replies["SetChargingProfile"] = "Rejected"  # no smart charging on this charger
        start = await cp.call(
            call16.StartTransaction(connector_id=1, id_tag="CY-CARD", meter_start=0, timestamp=at(0))
        )
        (session,) = (await api.get("/api/v1/sessions", params={"charger_id": "CP-noprofile"})).json()
        await cp.call(
            call16.MeterValues(
                connector_id=1, transaction_id=start.transaction_id, meter_value=[energy(80, 7000, 10)]
            )
        )  # unpaid, past the allowance
        (stop,) = await cp.recorder.wait_for("RemoteStopTransaction")
        assert stop == {"transactionId": start.transaction_id}
        assert cp.recorder.of("SetChargingProfile")  # tried first
        async with follow_events(server.http_url, session["id"], server.api_key) as stream:
            assert (await stream.next("suspended")).data["how"] == "remote stop"
