"""The simnet's group commit: writes share transactions, and nothing is answered or published before
it is committed."""

from __future__ import annotations

import sqlite3

from lightning import InvoiceCursor, InvoiceState
from lightning.lnd import LndBackend
from lightning.simnet import Simnet
from lightning.simnet.network import SETTLED


def _db_invoice(simnet: Simnet, payment_hash: bytes) -> tuple[int, int] | None:
    """(state, settle_index) as committed in simnet.db, read on a connection of its own."""
    conn = sqlite3.connect(simnet.data_dir / "simnet.db")
    try:
        row = conn.execute(
            "SELECT state, settle_index FROM invoices WHERE r_hash = ?", (payment_hash,)
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else (row[0], row[1])


async def test_a_burst_of_writes_is_one_transaction(simnet: Simnet) -> None:
    net = simnet.network
    assert net is not None
    store = net.store
    await net.durable()
    commits, rows = store.commits, store.rows_written
    created = [net.add_invoice("satwatt", value_msat=1_000 + i, memo=f"burst {i}") for i in range(50)]
    assert all(_db_invoice(simnet, inv.r_hash) is None for inv in created[:3])  # not yet committed
    await net.durable()
    assert store.commits == commits + 1
    assert store.rows_written == rows + 51  # 50 invoices and the node's indexes, written once
    assert all(_db_invoice(simnet, inv.r_hash) == (0, 0) for inv in created)


async def test_events_are_published_after_their_commit(simnet: Simnet) -> None:
    net = simnet.network
    assert net is not None
    queue = net.invoice_events.subscribe("satwatt")
    try:
        inv = net.add_invoice("satwatt", value_msat=2_000)
        assert queue.empty()  # in memory only: nobody hears of it yet
        await net.durable()
        kind, msg = queue.get_nowait()
        assert kind == "add" and msg.r_hash == inv.r_hash
    finally:
        net.invoice_events.unsubscribe("satwatt", queue)


async def test_answered_and_streamed_facts_are_already_on_disk(
    simnet: Simnet, seller: LndBackend, car1: LndBackend
) -> None:
    invoice = await seller.create_invoice(3_000, "durable")
    assert _db_invoice(simnet, invoice.payment_hash) == (0, 0)  # AddInvoice answered after its commit
    stream = seller.invoice_updates(InvoiceCursor(invoice.add_index, 0))
    try:
        await car1.pay_invoice(invoice.bolt11, fee_limit_msat=2_000, timeout_s=10)
        seen = await anext(stream)
        while seen.payment_hash != invoice.payment_hash:
            seen = await anext(stream)
        assert seen.state is InvoiceState.SETTLED
        assert _db_invoice(simnet, invoice.payment_hash) == (SETTLED, seen.settle_index)
    finally:
        await stream.aclose()
