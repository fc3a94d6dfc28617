"""Tariffs, payers, walk-up errors, who may see a session, the ledger, and idempotent invoice creation."""

from __future__ import annotations

import csv
import io

import httpx
from sqlalchemy import select

from csms.db.models import LightningInvoice, SettlementAction
from tests.conftest import RunningServer
from tests.ocpp_clients import connect_charger
from tests.sessions_helpers import follow_events, pay, payer_node
from tests.test_ocpp16 import register
from tests.test_ocpp201 import event, meter
from tests.test_settlement_flow import sell_at


async def test_default_tariff_and_tariff_validation(api: httpx.AsyncClient) -> None:
    tariffs = (await api.get("/api/v1/tariffs")).json()
    assert [t["id"] for t in tariffs] == ["default"] and tariffs[0]["price_msat_per_kwh"] > 0
    for body, field in [
        ({"name": "x", "price_msat_per_kwh": -1}, "price_msat_per_kwh"),
        ({"name": "x", "increment_wh": 0}, "increment_wh"),
        ({"name": "x", "grace_s": 1.5}, "grace_s"),
        (
            {
                "name": "x",
                "schedule": {
                    "zone": "Europe/Berlin",
                    "windows": [
                        {"start": "17:00", "end": "21:00", "price_msat_per_kwh": 1},
                        {"start": "20:00", "end": "22:00", "price_msat_per_kwh": 2},
                    ],
                },
            },
            "schedule.windows",
        ),
        ({"name": "x", "schedule": {"zone": "Mars/Olympus", "windows": []}}, "schedule.zone"),
        ({"price_msat_per_kwh": 5}, "name"),
        ({"name": "x", "colour": "red"}, "colour"),
    ]:
        response = await api.post("/api/v1/tariffs", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert any(e["field"].startswith(field) for e in response.json()["errors"]), response.json()
    created = await api.post(
        "/api/v1/tariffs",
        json={
            "name": "peak",
            "schedule": {
                "zone": "Europe/Berlin",
                "windows": [{"start": "22:00", "end": "06:00", "price_msat_per_kwh": 50_000}],
            },
        },
    )
    assert created.status_code == 201
    tariff = created.json()
    patched = await api.patch(f"/api/v1/tariffs/{tariff['id']}", json={"increment_wh": 250})
    assert (
        patched.json()["increment_wh"] == 250 and patched.json()["schedule"]["windows"][0]["start"] == "22:00"
    )
    bad_patch = await api.patch(f"/api/v1/tariffs/{tariff['id']}", json={"stop_after_s": -5})
    assert bad_patch.status_code == 422 and bad_patch.json()["errors"][0]["field"] == "stop_after_s"
    await api.post("/api/v1/chargers", json={"id": "CP-t"})
    unknown = await api.patch("/api/v1/chargers/CP-t", json={"tariff_id": "t_nope"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "tariff_id"


async def test_walk_up_refusals(server: RunningServer, api: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as anyone:
        missing = await anyone.post("/api/v1/sessions", json={"charger_id": "nope", "connector_id": 1})
        assert missing.status_code == 404
        await register(api, "CP-w")
        offline = await anyone.post("/api/v1/sessions", json={"charger_id": "CP-w", "connector_id": 1})
        assert offline.status_code == 409 and offline.json()["reason"] == "not_connected"
        bad = await anyone.post("/api/v1/sessions", json={"charger_id": "CP-w", "connector_id": 0})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "connector_id"
        async with connect_charger(server.ocpp_url, "CP-w", "2.0.1"):
            first = await anyone.post("/api/v1/sessions", json={"charger_id": "CP-w", "connector_id": 1})
            assert first.status_code == 201
            busy = await anyone.post("/api/v1/sessions", json={"charger_id": "CP-w", "connector_id": 1})
            assert busy.status_code == 409 and busy.json()["reason"] == "busy"
            # the driver calls it off before paying: the connector is free again
            token = first.json()["token"]
            stopped = await anyone.post(
                f"/api/v1/sessions/{first.json()['id']}/stop", headers={"Authorization": f"Bearer {token}"}
            )
            assert stopped.status_code == 200 and stopped.json()["state"] == "ended"
            again = await anyone.post("/api/v1/sessions", json={"charger_id": "CP-w", "connector_id": 1})
            assert again.status_code == 201


async def test_a_driver_sees_only_their_own_session(server: RunningServer, api: httpx.AsyncClient) -> None:
    await register(api, "CP-a")
    await register(api, "CP-b")
    payer = (await api.post("/api/v1/payers", json={"name": "Bo", "id_tags": ["BO-1"]})).json()
    assert "token" in payer and payer["id_tags"] == ["BO-1"]
    assert "token" not in (await api.get(f"/api/v1/payers/{payer['id']}")).json()
    taken = await api.post("/api/v1/payers", json={"name": "Eve", "id_tags": ["BO-1"]})
    assert taken.status_code == 409
    async with (
        connect_charger(server.ocpp_url, "CP-a", "2.0.1"),
        connect_charger(server.ocpp_url, "CP-b", "1.6"),
        httpx.AsyncClient(base_url=server.http_url) as anyone,
    ):
        mine = (await anyone.post("/api/v1/sessions", json={"charger_id": "CP-a", "connector_id": 1})).json()
        theirs = (
            await anyone.post("/api/v1/sessions", json={"charger_id": "CP-b", "connector_id": 1})
        ).json()

        def as_(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        assert (
            await anyone.get(f"/api/v1/sessions/{mine['id']}", headers=as_(mine["token"]))
        ).status_code == 200
        for path in ("", "/invoices", "/ledger", "/events"):
            response = await anyone.get(f"/api/v1/sessions/{theirs['id']}{path}", headers=as_(mine["token"]))
            assert response.status_code == 403, path
            payer_view = await anyone.get(
                f"/api/v1/sessions/{theirs['id']}{path}", headers=as_(payer["token"])
            )
            assert payer_view.status_code == 403, path
        assert (await anyone.get(f"/api/v1/sessions/{theirs['id']}")).status_code == 401
        listed = (await anyone.get("/api/v1/sessions", headers=as_(mine["token"]))).json()
        assert [s["id"] for s in listed] == [mine["id"]]
        assert (await anyone.get("/api/v1/sessions", headers=as_(payer["token"]))).json() == []
        # browsers' EventSource passes the token in the query
        async with anyone.stream(
            "GET", f"/api/v1/sessions/{mine['id']}/events", params={"token": mine["token"]}
        ) as stream:
            assert stream.status_code == 200 and stream.headers["content-type"].startswith(
                "text/event-stream"
            )
        assert (await api.get(f"/api/v1/sessions/{theirs['id']}")).status_code == 200  # the operator sees all
        assert (await api.get("/api/v1/chargers", headers=as_(mine["token"]))).status_code == 401


async def test_ledger_export_and_cost_updates_on_201(server: RunningServer, api: httpx.AsyncClient) -> None:
    await register(api, "CP-l")
    await sell_at(api, "CP-l", session_fee_msat=1_000)
    simnet = server.app.state.lightning.simnet
    async with (
        connect_charger(server.ocpp_url, "CP-l", "2.0.1") as cp,
        payer_node(simnet) as car,
        httpx.AsyncClient(base_url=server.http_url) as anyone,
    ):
        walk_up = (
            await anyone.post("/api/v1/sessions", json={"charger_id": "CP-l", "connector_id": 1})
        ).json()
        assert walk_up["invoice"]["amount_msat"] == 11_000 and walk_up["invoice"]["fee_msat"] == 1_000
        async with follow_events(server.http_url, walk_up["id"], walk_up["token"]) as events:
            await pay(car, walk_up["invoice"]["bolt11"])
            (request,) = await cp.recorder.wait_for("RequestStartTransaction")
            await cp.call(
                event(
                    "Started",
                    0,
                    0,
                    tx="L-TX",
                    trigger="RemoteStart",
                    id_token=request["idToken"]["id_token"],
                    remote_start_id=request["remoteStartId"],
                    values=[meter(0, 0, 0, "Transaction.Begin")],
                )
            )
            await cp.call(event("Ended", 1, 30, tx="L-TX", values=[meter(80, 0, 30, "Transaction.End")]))
            closed = (await events.next("closed")).data
        headers = {"Authorization": f"Bearer {walk_up['token']}"}
        ledger = (
            await anyone.get(
                f"/api/v1/sessions/{walk_up['id']}/ledger", headers=headers, params={"reconcile": "true"}
            )
        ).json()
        exported = await anyone.get(
            f"/api/v1/sessions/{walk_up['id']}/ledger",
            headers=headers,
            params={"format": "csv", "reconcile": "true"},
        )
    assert (
        closed["outcome"] == "settled" and closed["cost_msat"] == 9_000 and closed["refundable_msat"] == 2_000
    )
    assert ledger["session"]["cost_msat"] == 9_000 and ledger["mismatches"] == []
    assert ledger["bill"]["lines"] == [
        {
            "invoice_key": walk_up["invoice"]["key"],
            "energy_wh": 80,
            "price_msat_per_kwh": 100_000,
            "amount_msat": 8_000,
        }
    ]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert exported.headers["content-type"].startswith("text/csv")
    assert [(r["status"], r["node_state"], r["amount_msat"]) for r in rows] == [("paid", "SETTLED", "11000")]
    assert exported.headers["content-disposition"].endswith(f'satwatt-{walk_up["id"]}.csv"')


async def test_cost_updated_is_sent_to_201_chargers(server: RunningServer, api: httpx.AsyncClient) -> None:
    await register(api, "CP-c")
    await sell_at(api, "CP-c")
    simnet = server.app.state.lightning.simnet

    async with (
        connect_charger(server.ocpp_url, "CP-c", "2.0.1") as cp,
        payer_node(simnet) as car,
        httpx.AsyncClient(base_url=server.http_url) as anyone,
    ):
        from ocpp.routing import on
        from ocpp.v201 import call_result

        @on("CostUpdated")
        async def cost_updated(total_cost: object, transaction_id: str) -> object:
            await cp.recorder.record(
                "CostUpdated", {"totalCost": total_cost, "transactionId": transaction_id}
            )
            return call_result.CostUpdated()

        cp.route_map["CostUpdated"] = {"_on_action": cost_updated}
        walk_up = (
            await anyone.post("/api/v1/sessions", json={"charger_id": "CP-c", "connector_id": 1})
        ).json()
        await pay(car, walk_up["invoice"]["bolt11"])
        (request,) = await cp.recorder.wait_for("RequestStartTransaction")
        await cp.call(
            event(
                "Started",
                0,
                0,
                tx="C-TX",
                trigger="RemoteStart",
                id_token=request["idToken"]["id_token"],
                remote_start_id=request["remoteStartId"],
                values=[meter(0, 0, 0, "Transaction.Begin")],
            )
        )
        await cp.call(event("Updated", 1, 10, tx="C-TX", values=[meter(70, 11000, 10)]))
        async with follow_events(server.http_url, walk_up["id"], walk_up["token"]) as events:
            second = (await events.next("invoice")).data
            second = (
                (await events.next("invoice")).data if second["key"] == walk_up["invoice"]["key"] else second
            )
            await pay(car, second["bolt11"])
            (update,) = await cp.recorder.wait_for("CostUpdated")
    assert update["transactionId"] == "C-TX" and update["totalCost"] == 7  # sats: 70 Wh at 100 sat/kWh


async def test_invoice_creation_is_idempotent_across_a_crash(
    server: RunningServer, api: httpx.AsyncClient
) -> None:
    """After a crash between the node making the invoice and satwatt recording it: no second invoice."""
    await register(api, "CP-i")
    async with (
        connect_charger(server.ocpp_url, "CP-i", "1.6"),
        httpx.AsyncClient(base_url=server.http_url) as anyone,
    ):
        walk_up = (
            await anyone.post("/api/v1/sessions", json={"charger_id": "CP-i", "connector_id": 1})
        ).json()
        engine = server.app.state.settlement
        key = walk_up["invoice"]["key"]
        async with engine.db.begin() as db:  # as if the crash came before these were written
            row = await db.get(LightningInvoice, key)
            row.status, row.bolt11 = "creating", None
            (await db.get(SettlementAction, key)).status = "pending"
        number = row.session_number
        await engine._drain(number, from_log=True)  # as after a restart: the outbox is read again
        async with engine.db() as db:
            row = await db.get(LightningInvoice, key)
            pending = list(
                await db.scalars(select(SettlementAction).where(SettlementAction.status == "pending"))
            )
    assert row.status == "open" and row.bolt11 == walk_up["invoice"]["bolt11"]
    assert pending == []
    async with payer_node(server.app.state.lightning.simnet, "satwatt") as seller:
        invoices, _, _ = await seller.list_invoices()
    assert [i.payment_hash_hex for i in invoices] == [walk_up["invoice"]["payment_hash"]]
