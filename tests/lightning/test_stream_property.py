"""Property: whatever the interleaving of invoices, payments, consumer restarts and outages, a
consumer that persists ``cursor.advance(invoice)`` sees every settle exactly once.

A restarted consumer is given time to subscribe before the next payment: on a node that has never
settled an invoice, LND cannot replay "settles after 0", and that instant is the documented gap
(covered by the engine's start-up reconciliation), not what this property is about."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightning import Invoice, InvoiceCursor, InvoiceState
from lightning.lnd import LndBackend, LndConfig
from lightning.simnet import Simnet

from .conftest import FAST_RETRY, NODES, wait_for

OPS = st.lists(st.sampled_from(["create", "create", "pay", "restart", "outage"]), min_size=1, max_size=12)


async def scenario(data_dir: Path, ops: list[str]) -> None:
    simnet = Simnet(data_dir, port=0, nodes=NODES)
    await simnet.start()
    seen: list[Invoice] = []
    cursor = InvoiceCursor()
    backends: list[LndBackend] = []

    def backend(node: str) -> LndBackend:
        b = LndBackend(LndConfig.from_simnet(simnet, node), retry=FAST_RETRY)
        backends.append(b)
        return b

    async def consume(b: LndBackend) -> None:
        nonlocal cursor
        async for invoice in b.invoice_updates(cursor):
            seen.append(invoice)
            cursor = cursor.advance(invoice)  # "persisted"

    async def start_consumer() -> asyncio.Task[None]:
        task = asyncio.create_task(consume(backend("satwatt")))
        await wait_for(lambda: simnet.invoice_subscribers("satwatt") == 1 or task.done())
        return task

    seller, payer = backend("satwatt"), backend("car1")
    open_invoices: list[Invoice] = []
    created: list[bytes] = []
    try:
        consumer = await start_consumer()
        for op in ops:
            if op == "create":
                invoice = await seller.create_invoice(1_000)
                open_invoices.append(invoice)
                created.append(invoice.payment_hash)
            elif op == "pay" and open_invoices:
                await payer.pay_invoice(open_invoices.pop(0).bolt11, 10_000, 5)
            elif op == "restart":
                consumer.cancel()
                await asyncio.gather(consumer, return_exceptions=True)
                await wait_for(lambda: simnet.invoice_subscribers("satwatt") == 0)
                consumer = await start_consumer()
            elif op == "outage":
                await simnet.begin_outage()
                assert simnet.network is not None
                row = simnet.network.add_invoice("satwatt", value_msat=2_000)  # node up, link down
                created.append(row.r_hash)
                await simnet.pay_direct("car1", row.payment_request)
                if open_invoices:
                    await simnet.pay_direct("car1", open_invoices.pop(0).bolt11)
                await simnet.end_outage()
        settled = {h for h in created if h not in {i.payment_hash for i in open_invoices}}

        def caught_up() -> bool:
            return {i.payment_hash for i in seen if i.state is InvoiceState.SETTLED} == settled

        await wait_for(caught_up, timeout=10)
        assert not consumer.done()
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        settles = [i.payment_hash for i in seen if i.state is InvoiceState.SETTLED]
        assert len(settles) == len(set(settles)), "a settle was delivered twice"
        indexes = [i.settle_index for i in seen if i.state is InvoiceState.SETTLED]
        assert indexes == sorted(indexes)
        pairs = [(i.payment_hash, i.state) for i in seen]
        assert len(pairs) == len(set(pairs)), "an event was delivered twice"
        assert {i.payment_hash for i in seen} <= set(created)
    finally:
        for b in backends:
            await b.close()
        await simnet.stop()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_every_settle_exactly_once(ops: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp), ops))
