"""A refund across a real kill -9. ``csms serve`` runs as its own process; the driver's wallet withdraws
the change of a session from its receipt with a hold invoice, so satwatt's payment stays in flight
(recorded ``paying``, under way at the node, its outcome not recorded) while the process is killed with
SIGKILL. The payment completes while satwatt is down, or after it is back; the restarted process
records it once: the wallet is paid once, the ledger has one refund and one ``refunded`` event, and the
link pays nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from csms.db.engine import create_engine, create_session_factory
from csms.db.models import SessionEvent
from lightning.backend import InvoiceState
from lightning.lnd.backend import LndBackend
from lightning.simnet import NodeSpec, Simnet
from tests.cluster.processes import Member, poll, serve_env
from tests.lnurl.test_lnurl_flow import session_json, surplus_session
from tests.lnurl.wallet import LnurlRefused, Wallet
from tests.sessions_helpers import payer_node

REFUND_MSAT = 6_000


async def receipt_withdraw(phone: httpx.AsyncClient, session_id: str, token: str) -> str:
    """The withdraw link of the session's receipt, as the driver's browser gets it (the token opens the
    page, which keeps it in a cookie)."""
    opened = await phone.post(f"/s/{session_id}/token", data={"token": token}, follow_redirects=True)
    assert opened.status_code == 200, opened.text
    link = re.search(r'id="withdraw-link" href="(lightning:LNURL1[0-9A-Z]+)"', opened.text)
    assert link is not None, opened.text
    return link[1]


async def held(node: LndBackend, payment_hash: bytes) -> None:
    """Until the invoice's HTLC is held (the payer's payment is in flight)."""
    async for update in node.watch_invoice(payment_hash):
        if update.state is InvoiceState.ACCEPTED:
            return


async def refunded_events(database_url: str, session_id: str) -> list[dict[str, object]]:
    engine = create_engine(database_url)
    try:
        async with create_session_factory(engine)() as db:
            rows = await db.scalars(
                select(SessionEvent).where(
                    SessionEvent.kind == "refunded",
                    SessionEvent.data["key"].as_string().startswith(f"{session_id}/"),
                )
            )
            return [dict(r.data) for r in rows]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("settled_while_down", [True, False], ids=["settled-while-down", "settled-after"])
async def test_a_refund_in_flight_at_a_kill_9_is_paid_and_recorded_once(
    database_url: str, tmp_path: Path, settled_while_down: bool
) -> None:
    simnet = Simnet(
        tmp_path / "simnet",
        port=0,
        nodes=(NodeSpec("satwatt", 1_000_000), NodeSpec("car1"), NodeSpec("car2")),
    )
    await simnet.start()
    key = "kill9-" + secrets.token_hex(8)
    satwatt = Member("satwatt", tmp_path / "satwatt", serve_env(database_url, simnet, key))
    try:
        await satwatt.start()
        async with satwatt.api(key) as api:
            created = await surplus_session(satwatt.http, satwatt.ocpp, api, "CP-K9-REAL", simnet)
        session_id = created["id"]
        async with (
            payer_node(simnet, "car2") as wallet_node,
            httpx.AsyncClient(base_url=satwatt.http, timeout=60) as phone,
        ):
            wallet = Wallet(wallet_node, phone)
            withdraw_link = await receipt_withdraw(phone, session_id, created["token"])
            offer = await wallet.scan(withdraw_link)
            assert offer["maxWithdrawable"] == REFUND_MSAT
            preimage = secrets.token_bytes(32)
            payment_hash = hashlib.sha256(preimage).digest()
            invoice = await wallet_node.create_hold_invoice(payment_hash, REFUND_MSAT, "satwatt refund", 3600)
            submitting = asyncio.create_task(wallet.submit(offer, invoice.bolt11))
            async with asyncio.timeout(30):
                await held(wallet_node, payment_hash)  # satwatt's payment is in flight, not recorded
            await satwatt.kill()
            with contextlib.suppress(httpx.HTTPError, LnurlRefused):
                await submitting  # its answer died with the process
            if settled_while_down:
                await wallet_node.settle_hold_invoice(preimage)
            await satwatt.start()
            if not settled_while_down:
                await wallet_node.settle_hold_invoice(preimage)
            async with satwatt.api(key) as api:
                body = await poll(
                    lambda: session_json(api, session_id), lambda b: b["refunded_msat"] == REFUND_MSAT, 30
                )
                ledger = (await api.get(f"/api/v1/sessions/{session_id}/ledger")).json()
            assert body["refundable_msat"] == 0
            (refund,) = ledger["refunds"]
            assert refund["status"] == "paid" and refund["amount_msat"] == REFUND_MSAT
            assert refund["payment_hash"] == payment_hash.hex() and refund["fee_msat"] is not None
            assert [e["key"] for e in await refunded_events(database_url, session_id)] == [refund["key"]]
            paid = await wallet_node.lookup_invoice(payment_hash)
            assert paid.state is InvoiceState.SETTLED and paid.amount_paid_msat == REFUND_MSAT
            assert simnet.network is not None
            made = [p.payment_hash for p in simnet.network.payments["satwatt"].values()]
            assert made.count(payment_hash) == 1
            with pytest.raises(LnurlRefused, match="already withdrawn"):
                await wallet.scan(withdraw_link)
    finally:
        await satwatt.stop()
        await simnet.stop()
