"""invoice_updates: replay from a persisted cursor, live events, and resumption after restarts
of either side and outages, with no invoice missed or duplicated."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from pathlib import Path

import pytest

from lightning import (
    BackendUnavailable,
    Invoice,
    InvoiceCursor,
    InvoiceState,
    PaymentStatus,
)
from lightning.lnd import LndBackend, LndConfig, RetryPolicy
from lightning.simnet import Faults, Simnet

from .conftest import FAST_RETRY, NODES, wait_for


class Consumer:
    """What the settlement engine does: process each invoice, then persist the advanced cursor."""

    def __init__(self, backend: LndBackend, cursor: InvoiceCursor) -> None:
        self.backend = backend
        self.cursor = cursor
        self.events: list[Invoice] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Consumer:
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async for invoice in self.backend.invoice_updates(self.cursor):
            self.events.append(invoice)
            self.cursor = self.cursor.advance(invoice)

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task

    def settled(self) -> list[bytes]:
        return [e.payment_hash for e in self.events if e.state is InvoiceState.SETTLED]

    async def wait_settled(self, count: int, timeout: float = 5.0) -> None:
        await wait_for(lambda: len(self.settled()) >= count, timeout)
        if self.task is not None and self.task.done():
            self.task.result()


async def test_live_adds_and_settles(seller: LndBackend, car1: LndBackend, simnet: Simnet) -> None:
    consumer = Consumer(seller, InvoiceCursor()).start()
    await wait_for(lambda: simnet.invoice_subscribers("satwatt") == 1)
    invoices = [await seller.create_invoice(1_000 * (i + 1)) for i in range(3)]
    await car1.pay_invoice(invoices[0].bolt11, 10_000, 5)
    await car1.pay_invoice(invoices[2].bolt11, 10_000, 5)
    await consumer.wait_settled(2)
    await consumer.stop()
    assert [(e.add_index, e.state) for e in consumer.events] == [
        (1, InvoiceState.OPEN),
        (2, InvoiceState.OPEN),
        (3, InvoiceState.OPEN),
        (1, InvoiceState.SETTLED),
        (3, InvoiceState.SETTLED),
    ]
    assert consumer.cursor == InvoiceCursor(add_index=3, settle_index=2)
    assert consumer.events[3].amount_paid_msat == 1_000


async def test_stopping_a_consumer_ends_the_server_stream(seller: LndBackend, simnet: Simnet) -> None:
    consumer = Consumer(seller, InvoiceCursor()).start()
    await wait_for(lambda: simnet.invoice_subscribers("satwatt") == 1)
    await consumer.stop()
    await wait_for(lambda: simnet.invoice_subscribers("satwatt") == 0, timeout=2)
    assert (await seller.get_info()).alias == "satwatt"  # the channel stays usable


async def test_zero_cursor_replays_history(seller: LndBackend, car1: LndBackend, simnet: Simnet) -> None:
    paid = await seller.create_invoice(1_000)
    await car1.pay_invoice(paid.bolt11, 10_000, 5)
    still_open = await seller.create_invoice(1_500)
    consumer = Consumer(seller, InvoiceCursor()).start()
    await wait_for(lambda: len(consumer.events) == 2)
    await wait_for(lambda: simnet.invoice_subscribers("satwatt") == 1)
    new = await seller.create_invoice(2_000)
    await car1.pay_invoice(new.bolt11, 10_000, 5)
    await consumer.wait_settled(2)
    await consumer.stop()
    assert [(e.payment_hash, e.state) for e in consumer.events] == [
        (still_open.payment_hash, InvoiceState.OPEN),  # history: the open one as an add ...
        (paid.payment_hash, InvoiceState.SETTLED),  # ... the settled one as its settle
        (new.payment_hash, InvoiceState.OPEN),
        (new.payment_hash, InvoiceState.SETTLED),
    ]
    assert consumer.cursor == InvoiceCursor(add_index=3, settle_index=2)


async def test_current_cursor_skips_history(seller: LndBackend, car1: LndBackend, simnet: Simnet) -> None:
    old = await seller.create_invoice(1_000)
    await car1.pay_invoice(old.bolt11, 10_000, 5)
    await seller.create_invoice(1_000)
    start = await seller.current_cursor()
    assert start == InvoiceCursor(add_index=2, settle_index=1)
    consumer = Consumer(seller, start).start()
    await wait_for(lambda: simnet.invoice_subscribers("satwatt") == 1)
    new = await seller.create_invoice(2_000)
    await car1.pay_invoice(new.bolt11, 10_000, 5)
    await consumer.wait_settled(1)
    await consumer.stop()
    assert [(e.payment_hash, e.state) for e in consumer.events] == [
        (new.payment_hash, InvoiceState.OPEN),
        (new.payment_hash, InvoiceState.SETTLED),
    ]


async def test_resume_after_backend_restart(make_backend, car1: LndBackend, simnet: Simnet) -> None:
    first = make_backend("satwatt")
    consumer = Consumer(first, InvoiceCursor()).start()
    await wait_for(lambda: simnet.invoice_subscribers("satwatt") == 1)
    inv = [await first.create_invoice(1_000 + i) for i in range(3)]
    await car1.pay_invoice(inv[0].bolt11, 10_000, 5)
    await car1.pay_invoice(inv[1].bolt11, 10_000, 5)
    await consumer.wait_settled(2)
    await consumer.stop()
    await first.close()
    persisted = consumer.cursor
    assert persisted == InvoiceCursor(3, 2)

    # satwatt is down: invoices are added and paid meanwhile.
    inv.append(await simnet_invoice(simnet, 4_000))  # add 4
    inv.append(await simnet_invoice(simnet, 5_000))  # add 5, stays open
    inv.append(await simnet_invoice(simnet, 6_000))  # add 6
    for i in (2, 3, 5):  # settle 3, 4, 5
        await car1.pay_invoice(inv[i].bolt11, 10_000, 5)

    second = make_backend("satwatt")
    resumed = Consumer(second, persisted).start()
    await resumed.wait_settled(3)
    await wait_for(lambda: resumed.cursor == InvoiceCursor(6, 5))
    await resumed.stop()
    # Each invoice once: the open one as an add, the three paid meanwhile as settles, in order.
    assert [(e.payment_hash, e.state) for e in resumed.events] == [
        (inv[4].payment_hash, InvoiceState.OPEN),
        (inv[2].payment_hash, InvoiceState.SETTLED),
        (inv[3].payment_hash, InvoiceState.SETTLED),
        (inv[5].payment_hash, InvoiceState.SETTLED),
    ]
    all_settled = consumer.settled() + resumed.settled()
    assert sorted(all_settled) == sorted(inv[i].payment_hash for i in (0, 1, 2, 3, 5))
    assert len(set(all_settled)) == len(all_settled)


async def simnet_invoice(simnet: Simnet, amount_msat: int) -> Invoice:
    """Create an invoice for satwatt with a short-lived backend (another process, so to speak)."""
    backend = LndBackend(LndConfig.from_simnet(simnet, "satwatt"), retry=FAST_RETRY)
    try:
        return await backend.create_invoice(amount_msat)
    finally:
        await backend.close()


async def test_resume_after_simnet_restart(simnet_dir: Path, tmp_path: Path) -> None:
    first = Simnet(simnet_dir, port=0, nodes=NODES, seed=2)
    await first.start()
    port = first.port
    seller = LndBackend(LndConfig.from_simnet(first, "satwatt"), retry=FAST_RETRY)
    payer = LndBackend(LndConfig.from_simnet(first, "car1"), retry=FAST_RETRY)
    second: Simnet | None = None
    try:
        consumer = Consumer(seller, InvoiceCursor()).start()
        await wait_for(lambda: first.invoice_subscribers("satwatt") == 1)
        a = await seller.create_invoice(1_000)
        b = await seller.create_invoice(2_000)
        await payer.pay_invoice(a.bolt11, 10_000, 5)
        await consumer.wait_settled(1)
        balances = {n: first.balance_msat(n) for n in ("satwatt", "car1")}
        cert = first.tls_cert_path.read_bytes()

        await first.stop()  # the node goes down (state on disk)
        await wait_for(lambda: not seller.health.reachable)
        assert seller.health.consecutive_failures >= 1

        second = Simnet(simnet_dir, port=port, nodes=NODES, seed=2)
        await second.start()
        assert second.tls_cert_path.read_bytes() == cert  # same cert and macaroons: clients keep working
        assert {n: second.balance_msat(n) for n in balances} == balances
        # Paid right after the restart, possibly before the stream is back: replayed, not lost.
        await payer.pay_invoice(b.bolt11, 10_000, 5)
        c = await seller.create_invoice(3_000)
        await payer.pay_invoice(c.bolt11, 10_000, 5)
        await consumer.wait_settled(3)
        await wait_for(lambda: seller.health.reachable)
        assert consumer.settled() == [a.payment_hash, b.payment_hash, c.payment_hash]
        adds = [e.payment_hash for e in consumer.events if e.state is InvoiceState.OPEN]
        # c is seen as an add only if the stream was back before it was paid; else as a settle only.
        assert adds in ([a.payment_hash, b.payment_hash], [a.payment_hash, b.payment_hash, c.payment_hash])
        assert consumer.cursor == InvoiceCursor(3, 3)
        assert (await seller.lookup_invoice(a.payment_hash)).settle_index == 1  # indexes kept
        await consumer.stop()
    finally:
        await seller.close()
        await payer.close()
        if second is not None:
            await second.stop()


@pytest.mark.parametrize("settled_before", [True, False], ids=["settled-before", "fresh-node"])
async def test_outage_health_and_resume(
    seller: LndBackend, car1: LndBackend, simnet: Simnet, settled_before: bool
) -> None:
    if settled_before:
        earlier = await seller.create_invoice(500)
        await car1.pay_invoice(earlier.bolt11, 10_000, 5)
    consumer = Consumer(seller, await seller.current_cursor()).start()
    await wait_for(lambda: simnet.invoice_subscribers("satwatt") == 1)
    open_invoice = await seller.create_invoice(1_000)
    await wait_for(lambda: len(consumer.events) == 1)

    await simnet.begin_outage()  # the RPC link is down, the node keeps running
    await wait_for(lambda: not seller.health.reachable and seller.health.consecutive_failures >= 2)
    health = seller.health
    assert health.last_error and "UNAVAILABLE" in health.last_error
    with pytest.raises(BackendUnavailable):
        await LndBackend(
            seller.config, retry=RetryPolicy(initial_backoff_s=0.05, unavailable_timeout_s=0.2)
        ).get_info()
    paid = await simnet.pay_direct("car1", open_invoice.bolt11)  # paid during the outage
    assert paid.preimage is not None

    await simnet.end_outage()
    await consumer.wait_settled(1)
    await wait_for(lambda: seller.health.reachable)
    assert seller.health.consecutive_failures == 0 and seller.health.reconnects >= 1
    await consumer.stop()
    assert [(e.payment_hash, e.state) for e in consumer.events] == [
        (open_invoice.payment_hash, InvoiceState.OPEN),
        (open_invoice.payment_hash, InvoiceState.SETTLED),
    ]


async def test_unavailable_answers_then_recovery(seller: LndBackend, simnet: Simnet) -> None:
    simnet.set_unavailable(True)
    impatient = LndBackend(
        seller.config, retry=RetryPolicy(initial_backoff_s=0.05, unavailable_timeout_s=0.3)
    )
    try:
        with pytest.raises(BackendUnavailable, match="UNAVAILABLE"):
            await impatient.create_invoice(1_000)
        assert not impatient.health.reachable and impatient.health.consecutive_failures >= 2
        call = asyncio.create_task(seller.get_info())  # patient: retries until it is back
        await wait_for(lambda: seller.health.consecutive_failures >= 2)
        simnet.set_unavailable(False)
        assert (await asyncio.wait_for(call, 5)).alias == "satwatt"
        assert seller.health.reachable
    finally:
        await impatient.close()


async def test_starting_up_is_retried(seller: LndBackend, car1: LndBackend, simnet: Simnet) -> None:
    earlier = await seller.create_invoice(500)  # a node that has settled before: LND replays exactly
    await car1.pay_invoice(earlier.bolt11, 10_000, 5)
    consumer = Consumer(seller, await seller.current_cursor()).start()
    await wait_for(lambda: simnet.invoice_subscribers("satwatt") == 1)
    simnet.set_starting_up(True)
    call = asyncio.create_task(seller.create_invoice(1_000))
    await wait_for(lambda: seller.health.consecutive_failures >= 2)
    assert "starting up" in (seller.health.last_error or "")
    assert not seller.health.reachable and not call.done()
    ready = asyncio.create_task(seller.wait_ready(timeout_s=5))
    simnet.set_starting_up(False)
    await asyncio.wait_for(ready, 5)
    invoice = await asyncio.wait_for(call, 5)
    await wait_for(lambda: len(consumer.events) == 1)  # the stream came back and saw the add
    await car1.pay_invoice(invoice.bolt11, 10_000, 5)
    await consumer.wait_settled(1)
    await consumer.stop()
    assert [e.state for e in consumer.events] == [InvoiceState.OPEN, InvoiceState.SETTLED]


async def test_settle_index_gaps(simnet_dir: Path) -> None:
    async with Simnet(simnet_dir, port=0, nodes=NODES, faults=Faults(settle_index_step=3)) as net:
        seller = LndBackend(LndConfig.from_simnet(net, "satwatt"), retry=FAST_RETRY)
        payer = LndBackend(LndConfig.from_simnet(net, "car1"), retry=FAST_RETRY)
        try:
            invoices = [await seller.create_invoice(1_000) for _ in range(4)]
            await payer.pay_invoice(invoices[0].bolt11, 10_000, 5)
            await payer.pay_invoice(invoices[1].bolt11, 10_000, 5)
            cursor = InvoiceCursor(4, 6)  # processed everything so far; settle indexes were 3, 6
            consumer = Consumer(seller, cursor).start()
            await wait_for(lambda: net.invoice_subscribers("satwatt") == 1)
            await payer.pay_invoice(invoices[3].bolt11, 10_000, 5)
            await payer.pay_invoice(invoices[2].bolt11, 10_000, 5)
            await consumer.wait_settled(2)
            await consumer.stop()
            assert [(e.payment_hash, e.settle_index) for e in consumer.events] == [
                (invoices[3].payment_hash, 9),
                (invoices[2].payment_hash, 12),
            ]
        finally:
            await seller.close()
            await payer.close()


async def test_watch_invoice_across_outage(seller: LndBackend, simnet: Simnet) -> None:
    preimage = secrets.token_bytes(32)
    payment_hash = hashlib.sha256(preimage).digest()
    hold = await seller.create_hold_invoice(payment_hash, 10_000)
    states: list[InvoiceState] = []

    async def watch() -> None:
        async for invoice in seller.watch_invoice(payment_hash):
            states.append(invoice.state)

    task = asyncio.create_task(watch())
    await wait_for(lambda: states == [InvoiceState.OPEN])
    await simnet.begin_outage()
    await wait_for(lambda: not seller.health.reachable)
    held = await simnet.pay_direct("car1", hold.bolt11)
    assert held.status == 1  # IN_FLIGHT: the HTLC is held by the payee
    await simnet.end_outage()
    await wait_for(lambda: states == [InvoiceState.OPEN, InvoiceState.ACCEPTED])
    await seller.settle_hold_invoice(preimage)
    await asyncio.wait_for(task, 5)
    assert states == [InvoiceState.OPEN, InvoiceState.ACCEPTED, InvoiceState.SETTLED]


async def test_payment_retried_across_outage(seller: LndBackend, car1: LndBackend, simnet: Simnet) -> None:
    invoice = await seller.create_invoice(8_000)
    before = simnet.balance_msat("car1")
    await simnet.begin_outage()
    payment = asyncio.create_task(car1.pay_invoice(invoice.bolt11, 10_000, 5))
    await wait_for(lambda: car1.health.consecutive_failures >= 2)
    await simnet.end_outage()
    result = await asyncio.wait_for(payment, 5)
    assert result.status is PaymentStatus.SUCCEEDED
    assert simnet.balance_msat("car1") == before - 8_000 - result.fee_msat  # paid exactly once
