"""Restarts and outages in the middle of a paid session: nothing is lost and nothing counted twice.

satwatt runs against a simnet the test owns (CSMS_LIGHTNING_BACKEND=lnd over gRPC + TLS + macaroon), so
either side can be stopped while the other carries on.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from ocpp.v16 import call as call16
from sqlalchemy import func, select

from csms.db.models import LightningInvoice, SessionEvent
from csms.settings import Settings
from lightning.simnet import Simnet
from tests.conftest import RunningServer, start_server
from tests.ocpp_clients import at, connect_charger
from tests.sessions_helpers import follow_events, pay, payer_node
from tests.test_ocpp16 import energy, register
from tests.test_settlement_flow import TARIFF as BASE_TARIFF
from tests.test_settlement_flow import sell_at

TARIFF = BASE_TARIFF | {"grace_s": 60, "stop_after_s": 600}


@contextlib.asynccontextmanager
async def satwatt(settings: Settings) -> AsyncIterator[RunningServer]:
    server, task, port = await start_server(settings, "restart-key")
    try:
        yield RunningServer(settings, server.config.app, "restart-key", port)
    finally:
        server.should_exit = True
        await task


def settings_for(database_url: str, data_dir: Path, simnet: Simnet) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        auto_migrate=True,
        lightning_backend="lnd",
        lnd_grpc=simnet.address,
        lnd_tls_cert=simnet.tls_cert_path,
        lnd_macaroon=simnet.macaroon_path("satwatt", "admin"),
        settlement_tick_ms=100,
        ocpp_call_timeout_s=5,
        require_charger_password=False,  # its chargers are registered without passwords
    )


async def count_rows(app: Any, model: Any, **where: Any) -> int:
    async with app.state.service.db() as db:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(await db.scalar(query) or 0)


async def test_restart_of_satwatt_and_node_mid_session(database_url: str, tmp_path: Path) -> None:
    simnet = Simnet(tmp_path / "simnet", port=0)
    await simnet.start()
    data_dir = tmp_path / "satwatt"
    try:
        async with satwatt(settings_for(database_url, data_dir, simnet)) as first:
            api = first.api()
            await register(api, "CP-R")
            await sell_at(api, "CP-R", **{k: TARIFF[k] for k in ("grace_s", "stop_after_s")})
            async with connect_charger(first.ocpp_url, "CP-R", "1.6") as cp, payer_node(simnet) as car:
                walk_up = (
                    await api.post("/api/v1/sessions", json={"charger_id": "CP-R", "connector_id": 1})
                ).json()
                async with follow_events(first.http_url, walk_up["id"], walk_up["token"]) as events:
                    assert (await events.next("invoice")).data["key"] == walk_up["invoice"]["key"]
                    await pay(car, walk_up["invoice"]["bolt11"])
                    (request,) = await cp.recorder.wait_for("RemoteStartTransaction")
                    start = await cp.call(
                        call16.StartTransaction(
                            connector_id=1, id_tag=request["idTag"], meter_start=0, timestamp=at(0)
                        )
                    )
                    tx = start.transaction_id
                    await cp.call(
                        call16.MeterValues(
                            connector_id=1, transaction_id=tx, meter_value=[energy(60, 11000, 10)]
                        )
                    )
                    second = (await events.next("invoice")).data
                    assert second["key"] != walk_up["invoice"]["key"]
            await api.aclose()
        # satwatt is down: the car pays the second invoice anyway; then the node restarts too
        async with payer_node(simnet) as car:
            await pay(car, second["bolt11"])
        await simnet.stop()
        await simnet.start()
        async with satwatt(settings_for(database_url, data_dir, simnet)) as again:
            api = again.api()
            async with (
                follow_events(again.http_url, walk_up["id"], walk_up["token"]) as events,
                connect_charger(again.ocpp_url, "CP-R", "1.6") as cp,
                payer_node(simnet) as car,
            ):
                paid = await events.next("paid")
                paid_again = await events.next("paid")
                assert {paid.data["key"], paid_again.data["key"]} == {
                    walk_up["invoice"]["key"],
                    second["key"],
                }
                session = (await api.get(f"/api/v1/sessions/{walk_up['id']}")).json()
                assert session["paid_msat"] == 20_000 and session["state"] == "charging"
                # the session carries on after the restart of both
                await cp.call(
                    call16.MeterValues(
                        connector_id=1, transaction_id=tx, meter_value=[energy(160, 11000, 20)]
                    )
                )
                third = (await events.next("invoice")).data
                await pay(car, third["bolt11"])
                await events.next("paid")
                await cp.call(call16.StopTransaction(meter_stop=230, timestamp=at(30), transaction_id=tx))
                closed = (await events.next("closed")).data
            session = (await api.get(f"/api/v1/sessions/{walk_up['id']}")).json()
            assert closed["outcome"] == "settled"
            assert session["paid_msat"] == 30_000 and session["cost_msat"] == 23_000
            assert session["refundable_msat"] == 7_000
            app = again.app
            assert await count_rows(app, LightningInvoice, status="paid") == 3
            # each payment announced once, across both runs of satwatt
            assert await count_rows(app, SessionEvent, kind="paid") == 3
            ledger = (
                await api.get(f"/api/v1/sessions/{walk_up['id']}/ledger", params={"reconcile": "true"})
            ).json()
            assert ledger["mismatches"] == []
            assert [e["node_state"] for e in ledger["invoices"]] == ["SETTLED"] * 3
            await api.aclose()
        # the node holds exactly the invoices satwatt issued: none created twice
        async with payer_node(simnet, "satwatt") as seller:
            invoices, _, _ = await seller.list_invoices()
        assert sorted(i.payment_hash_hex for i in invoices) == sorted(
            e["payment_hash"] for e in ledger["invoices"]
        )
    finally:
        await simnet.stop()


async def test_node_outage_mid_session(database_url: str, tmp_path: Path) -> None:
    simnet = Simnet(tmp_path / "simnet", port=0)
    await simnet.start()
    try:
        async with satwatt(settings_for(database_url, tmp_path / "satwatt", simnet)) as server:
            api = server.api()
            await register(api, "CP-O")
            await sell_at(api, "CP-O", **{k: TARIFF[k] for k in ("grace_s", "stop_after_s")})
            async with connect_charger(server.ocpp_url, "CP-O", "1.6") as cp:
                walk_up = (
                    await api.post("/api/v1/sessions", json={"charger_id": "CP-O", "connector_id": 1})
                ).json()
                async with follow_events(server.http_url, walk_up["id"], walk_up["token"]) as events:
                    await simnet.begin_outage()
                    # paid while satwatt cannot reach its node
                    await simnet.pay_direct("car1", walk_up["invoice"]["bolt11"])
                    health = (await httpx.AsyncClient(base_url=server.http_url).get("/healthz")).json()
                    metrics = (await httpx.AsyncClient(base_url=server.http_url).get("/metrics")).text
                    await simnet.end_outage()
                    await events.next("paid")
                    await cp.recorder.wait_for("RemoteStartTransaction")
            session = (await api.get(f"/api/v1/sessions/{walk_up['id']}")).json()
            assert session["paid_msat"] == 10_000
            assert "satwatt_invoice_stream_up" in metrics and "lightning" in health
            await api.aclose()
    finally:
        await simnet.stop()
