"""LNURL in a cluster: a prepayment through one process for a charger another owns, top-ups through the
others (LNURL-pay and a plain invoice from the API), and its driver's withdraw through a third while it
charges (real processes, PostgreSQL, NATS, the simnet)."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import httpx

from csms import lnurl
from tests.cluster.processes import Cluster
from tests.lnurl.wallet import Wallet
from tests.ocpp_clients import connect_charger
from tests.sessions_helpers import follow_events, pay, payer_node
from tests.test_ocpp16 import register
from tests.test_settlement_flow import Meter, sell_at, start_remote


async def test_a_prepayment_through_a_non_owner_starts_the_charge_and_the_change_comes_back(
    cluster: Cluster,
) -> None:
    p1, p2, p3 = cluster.members
    charger_id = "CP-lnurl-cluster"
    async with p2.api(cluster.api_key) as api:
        await register(api, charger_id)
        await sell_at(api, charger_id, price_msat_per_kwh=1_000_000, prepay_min_msat=1_000_000)
    async with (
        connect_charger(p1.ocpp, charger_id, "1.6") as cp,
        payer_node(cluster.simnet) as node,
        httpx.AsyncClient(timeout=60) as http,
    ):
        wallet = Wallet(node, http)
        offer = await wallet.scan(lnurl.lightning_uri(f"{p2.http}/lnurlp/{charger_id}/1"))
        paid = await wallet.pay(offer, 5_000_000)  # sold by p2 through p1, the charger's owner
        assert paid.success_action is not None
        url = urlsplit(paid.success_action["url"])
        session_id, k1 = url.path.split("/")[2], parse_qs(url.query)["k1"][0]
        tx = await start_remote(cp, "1.6")
        meter = Meter(cp, "1.6", tx)
        await meter.send(1_000)
        await meter.send(2_000)
        # top-ups through the processes that do not hold the charger: p1 issues both invoices
        async with follow_events(p2.http, session_id, "st_" + k1) as events:
            assert (await events.next("paid")).data["amount_msat"] == 5_000_000  # the prepayment
            top_up = await wallet.get(f"{p3.http}/lnurl/topup/{session_id}?k1={k1}")
            await wallet.pay(top_up, 1_000_000)  # LNURL-pay, through p3
            assert (await events.next("paid")).data["amount_msat"] == 1_000_000
            created = await http.post(
                f"{p2.http}/api/v1/sessions/{session_id}/top-ups",
                json={"amount_msat": 1_000_000},
                headers={"Authorization": f"Bearer st_{k1}"},
            )
            assert created.status_code == 201, created.text  # a plain invoice, through p2
            await pay(node, created.json()["bolt11"])
            assert (await events.next("paid")).data["key"] == created.json()["key"]
        scanning = asyncio.create_task(
            wallet.scan(lnurl.lightning_uri(f"{p3.http}/lnurlp/{charger_id}/1?k1={k1}"))
        )
        await cp.recorder.wait_for("RemoteStopTransaction", timeout=20)
        await meter.stop(2_000)
        withdraw = await scanning
        assert withdraw["maxWithdrawable"] == 5_000_000  # 7,000 sat paid, 2 kWh used
        received = await wallet.withdraw(withdraw)
        assert received.amount_paid_msat == 5_000_000
