"""LNURL in a cluster: a prepayment through one process for a charger another owns, and its driver's
withdraw through a third while it charges (real processes, PostgreSQL, NATS, the simnet)."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import httpx

from csms import lnurl
from tests.cluster.processes import Cluster
from tests.lnurl.wallet import Wallet
from tests.ocpp_clients import connect_charger
from tests.sessions_helpers import payer_node
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
        k1 = parse_qs(urlsplit(paid.success_action["url"]).query)["k1"][0]
        tx = await start_remote(cp, "1.6")
        meter = Meter(cp, "1.6", tx)
        await meter.send(1_000)
        await meter.send(2_000)
        scanning = asyncio.create_task(
            wallet.scan(lnurl.lightning_uri(f"{p3.http}/lnurlp/{charger_id}/1?k1={k1}"))
        )
        await cp.recorder.wait_for("RemoteStopTransaction", timeout=20)
        await meter.stop(2_000)
        withdraw = await scanning
        assert withdraw["maxWithdrawable"] == 3_000_000
        received = await wallet.withdraw(withdraw)
        assert received.amount_paid_msat == 3_000_000
