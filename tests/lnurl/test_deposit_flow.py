"""The hold-invoice deposit over the simnet (Distributed Charge's manual pay): power on once the deposit's
HTLC is held; at the end a final invoice for the energy; the deposit canceled once it is paid (the
driver's sats go back), or settled when its HTLC's CLTV deadline nears and the driver walked away (the
difference withdrawn from the receipt)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import pytest

from csms import lnurl
from lightning import PaymentStatus
from lightning.errors import PaymentFailed
from lightning.simnet import Simnet
from tests.conftest import RunningServer
from tests.lnurl.test_lnurl_flow import session_json, wallet_of
from tests.ocpp_clients import connect_charger
from tests.sessions_helpers import follow_events, pay, payer_node
from tests.test_ocpp16 import register
from tests.test_settlement_flow import Meter, sell_at, start_remote
from tests.test_settlement_restart import satwatt, settings_for

DEPOSIT = {"price_msat_per_kwh": 1_000_000, "deposit_msat": 25_000_000, "invoice_expiry_s": 600}


@pytest.mark.parametrize("driver_pays", [True, False], ids=["final-paid", "walked-away"])
async def test_deposit_canceled_after_the_final_payment_or_settled_at_the_deadline(
    server: RunningServer, api: httpx.AsyncClient, driver_pays: bool
) -> None:
    charger_id = f"CP-deposit-{driver_pays}"
    simnet = server.app.state.lightning.simnet
    await register(api, charger_id)
    await sell_at(api, charger_id, **DEPOSIT)
    async with (
        connect_charger(server.ocpp_url, charger_id, "1.6") as cp,
        wallet_of(server, "car1") as wallet,
        httpx.AsyncClient(base_url=server.http_url) as client,
    ):
        page = (await client.get(f"/c/{charger_id}/1")).text  # the connector page explains the deposit
        assert 'id="deposit-hint"' in page and '<b id="deposit">25,000</b> sat' in page
        assert "as you charge" not in page
        created = (
            await client.post("/api/v1/sessions", json={"charger_id": charger_id, "connector_id": 1})
        ).json()
        deposit = created["invoice"]
        assert deposit["kind"] == "deposit" and deposit["amount_msat"] == 25_000_000
        async with follow_events(server.http_url, created["id"], created["token"]) as events:
            # the wallet's payment of a hold invoice stays in flight while the HTLC is held
            held = asyncio.create_task(
                wallet.node.pay_invoice(deposit["bolt11"], fee_limit_msat=300_000, timeout_s=120)
            )
            tx = await start_remote(cp, "1.6")  # power on once the HTLC is ACCEPTED
            assert (await session_json(api, created["id"]))["state"] == "charging"
            meter = Meter(cp, "1.6", tx)
            await meter.send(1_000)
            await meter.stop(2_000)  # 2 kWh: 2,000 sat
            final = (await events.next("invoice")).data
            while final["kind"] != "final":
                final = (await events.next("invoice")).data
            assert final["amount_msat"] == 2_000_000 and final["energy_wh"] == 2_000
            if driver_pays:
                await pay(wallet.node, final["bolt11"])
                with pytest.raises(PaymentFailed):  # the deposit canceled: its sats went back
                    await asyncio.wait_for(held, 30)
                closed = (await events.next("closed")).data
                assert closed["outcome"] == "settled" and closed["paid_msat"] == 2_000_000
                assert closed["refundable_msat"] == 0
            else:
                # the driver walks away: the deposit is settled before its HTLC's CLTV deadline (the
                # invoice's 600 s expiry plays no part), and the difference is recorded as refundable
                height = simnet.network.block_height
                simnet.network.mine_blocks(80 - 18)
                assert simnet.network.block_height == height + 62
                result = await asyncio.wait_for(held, 30)
                assert result.status is PaymentStatus.SUCCEEDED
                closed = (await events.next("closed")).data
                assert closed["outcome"] == "settled" and closed["paid_msat"] == 25_000_000
                assert closed["cost_msat"] == 2_000_000 and closed["refundable_msat"] == 23_000_000
        body = await session_json(api, created["id"])
        assert body["paid_msat"] - body["refundable_msat"] + body["unpaid_msat"] == body["cost_msat"]
        if not driver_pays:  # the receipt's withdraw gives the difference back
            k1 = server.app.state.settlement.withdraw_k1(created["id"])
            offer = await wallet.scan(
                lnurl.lightning_uri(f"{server.http_url}/lnurlw/{created['id']}?k1={k1}")
            )
            assert offer["maxWithdrawable"] == 23_000_000
            received = await wallet.withdraw(offer)
            assert received.amount_paid_msat == 23_000_000
        ledger = (await api.get(f"/api/v1/sessions/{created['id']}/ledger")).json()
        kinds = {i["kind"]: i["status"] for i in ledger["invoices"]}
        assert kinds["deposit"] == ("canceled" if driver_pays else "paid")
        with contextlib.suppress(Exception):
            held.cancel()


async def test_a_held_deposit_is_settled_by_satwatt_after_a_restart(
    database_url: str, tmp_path: Path
) -> None:
    """satwatt is down while the deposit's deadline nears: started again, it watches the deposit again (it
    was held before the restart) and settles it before the node would cancel it."""
    simnet = Simnet(tmp_path / "simnet", port=0)
    await simnet.start()
    data_dir = tmp_path / "satwatt"
    try:
        async with satwatt(settings_for(database_url, data_dir, simnet)) as first:
            api = first.api()
            await register(api, "CP-DR")
            await sell_at(api, "CP-DR", **DEPOSIT)
            async with connect_charger(first.ocpp_url, "CP-DR", "1.6") as cp, payer_node(simnet) as car:
                created = (
                    await api.post("/api/v1/sessions", json={"charger_id": "CP-DR", "connector_id": 1})
                ).json()
                held = asyncio.create_task(
                    car.pay_invoice(created["invoice"]["bolt11"], fee_limit_msat=300_000, timeout_s=120)
                )
                tx = await start_remote(cp, "1.6")
                async with follow_events(first.http_url, created["id"], created["token"]) as events:
                    await Meter(cp, "1.6", tx).stop(2_000)
                    final = (await events.next("invoice")).data
                    while final["kind"] != "final":
                        final = (await events.next("invoice")).data
                await api.aclose()
                # satwatt stops; the chain moves on to the deposit's deadline meanwhile
                assert simnet.network is not None
                simnet.network.mine_blocks(80 - 18)
                async with satwatt(settings_for(database_url, data_dir, simnet)) as again:
                    result = await asyncio.wait_for(held, 30)
                    assert result.status is PaymentStatus.SUCCEEDED
                    async with again.api() as api2:
                        closed = await wait_until_closed(api2, created["id"])
                    assert closed["paid_msat"] == 25_000_000 and closed["cost_msat"] == 2_000_000
                    assert closed["refundable_msat"] == 23_000_000
    finally:
        await simnet.stop()


async def wait_until_closed(api: httpx.AsyncClient, session_id: str) -> dict:
    async with asyncio.timeout(30):
        while True:
            body = (await api.get(f"/api/v1/sessions/{session_id}")).json()
            if body["state"] == "ended" and body["outcome"]:
                return body
            await asyncio.sleep(0.1)
