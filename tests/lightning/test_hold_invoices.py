"""Hold invoices: OPEN -> ACCEPTED (HTLC held) -> SETTLED (preimage) or CANCELED (refund)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

import pytest

from lightning import (
    DuplicateInvoice,
    Invoice,
    InvoiceAlreadyCanceled,
    InvoiceAlreadySettled,
    InvoiceCursor,
    InvoiceNotFound,
    InvoiceState,
    InvoiceStillOpen,
    PaymentFailed,
    PaymentStatus,
)
from lightning.lnd import LndBackend
from lightning.simnet import Simnet

from .conftest import wait_for

DEPOSIT_MSAT = 25_000_000


def new_secret() -> tuple[bytes, bytes]:
    preimage = secrets.token_bytes(32)
    return preimage, hashlib.sha256(preimage).digest()


async def collect(it, states: list[Invoice]) -> None:
    async for invoice in it:
        states.append(invoice)


async def test_hold_invoice_settle(seller: LndBackend, car1: LndBackend, simnet: Simnet) -> None:
    preimage, payment_hash = new_secret()
    hold = await seller.create_hold_invoice(payment_hash, DEPOSIT_MSAT, "deposit", expiry_s=600)
    assert hold.is_hold and hold.state is InvoiceState.OPEN and hold.preimage is None
    assert hold.payment_hash == payment_hash and hold.bolt11.startswith("lnbcrt250u1")

    seen: list[Invoice] = []
    watcher = asyncio.create_task(collect(seller.watch_invoice(payment_hash), seen))
    await wait_for(lambda: len(seen) == 1)  # the current state first
    assert seen[0].state is InvoiceState.OPEN

    car_before = simnet.balance_msat("car1")
    payment = asyncio.create_task(car1.pay_invoice(hold.bolt11, fee_limit_msat=50_000, timeout_s=5))
    await wait_for(lambda: len(seen) == 2)
    assert seen[1].state is InvoiceState.ACCEPTED
    accepted = await seller.lookup_invoice(payment_hash)
    assert accepted.state is InvoiceState.ACCEPTED and accepted.is_hold
    assert not payment.done()  # the payer waits while the HTLC is held
    assert simnet.balance_msat("car1") < car_before  # its funds are locked in the HTLC

    await seller.settle_hold_invoice(preimage)
    result = await asyncio.wait_for(payment, 5)
    assert result.status is PaymentStatus.SUCCEEDED and result.preimage == preimage
    await asyncio.wait_for(watcher, 5)  # the watch ends after a final state
    assert [s.state for s in seen] == [InvoiceState.OPEN, InvoiceState.ACCEPTED, InvoiceState.SETTLED]
    assert seen[-1].amount_paid_msat == DEPOSIT_MSAT and seen[-1].preimage == preimage

    await seller.settle_hold_invoice(preimage)  # idempotent, as in LND
    with pytest.raises(InvoiceAlreadySettled):
        await seller.cancel_hold_invoice(payment_hash)
    assert simnet.balance_msat("car1") == car_before - DEPOSIT_MSAT - result.fee_msat


async def test_hold_invoice_cancel_refunds(seller: LndBackend, car1: LndBackend, simnet: Simnet) -> None:
    preimage, payment_hash = new_secret()
    hold = await seller.create_hold_invoice(payment_hash, DEPOSIT_MSAT, "deposit")
    car_before = simnet.balance_msat("car1")
    payment = asyncio.create_task(car1.pay_invoice(hold.bolt11, fee_limit_msat=50_000, timeout_s=5))

    async def accepted() -> bool:
        return (await seller.lookup_invoice(payment_hash)).state is InvoiceState.ACCEPTED

    await wait_for(accepted)
    await seller.cancel_hold_invoice(payment_hash)
    with pytest.raises(PaymentFailed, match="FAILURE_REASON_INCORRECT_PAYMENT_DETAILS"):
        await asyncio.wait_for(payment, 5)
    assert simnet.balance_msat("car1") == car_before  # refunded, fee included
    assert (await seller.lookup_invoice(payment_hash)).state is InvoiceState.CANCELED
    await seller.cancel_hold_invoice(payment_hash)  # idempotent
    with pytest.raises(InvoiceAlreadyCanceled):
        await seller.settle_hold_invoice(preimage)
    states = [i.state async for i in seller.watch_invoice(payment_hash)]
    assert states == [InvoiceState.CANCELED]  # current state, then the stream ends


async def test_hold_invoice_errors(seller: LndBackend) -> None:
    preimage, payment_hash = new_secret()
    await seller.create_hold_invoice(payment_hash, 1_000)
    with pytest.raises(DuplicateInvoice):
        await seller.create_hold_invoice(payment_hash, 1_000)
    with pytest.raises(InvoiceStillOpen):
        await seller.settle_hold_invoice(preimage)  # no HTLC accepted yet
    with pytest.raises(InvoiceNotFound):
        await seller.settle_hold_invoice(secrets.token_bytes(32))
    with pytest.raises(InvoiceNotFound):
        await seller.cancel_hold_invoice(secrets.token_bytes(32))
    with pytest.raises(InvoiceNotFound):
        _ = [i async for i in seller.watch_invoice(secrets.token_bytes(32))]
    await seller.cancel_hold_invoice(payment_hash)  # an open hold invoice can be canceled
    assert (await seller.lookup_invoice(payment_hash)).state is InvoiceState.CANCELED


async def test_invoice_stream_has_no_accepted_or_canceled_events(
    seller: LndBackend, car1: LndBackend, simnet: Simnet
) -> None:
    """As LND: SubscribeInvoices emits adds and settles only."""
    stream = seller.invoice_updates(InvoiceCursor())
    events: list[Invoice] = []
    task = asyncio.create_task(collect(stream, events))
    await wait_for(lambda: simnet.invoice_subscribers("satwatt") == 1)
    preimage, payment_hash = new_secret()
    hold = await seller.create_hold_invoice(payment_hash, 5_000)
    await wait_for(lambda: len(events) == 1)
    payment = asyncio.create_task(car1.pay_invoice(hold.bolt11, 10_000, 5))

    async def accepted() -> bool:
        return (await seller.lookup_invoice(payment_hash)).state is InvoiceState.ACCEPTED

    await wait_for(accepted)
    _, other_hash = new_secret()
    await seller.create_hold_invoice(other_hash, 5_000)
    await seller.cancel_hold_invoice(other_hash)
    await seller.settle_hold_invoice(preimage)
    await asyncio.wait_for(payment, 5)
    await wait_for(lambda: len(events) == 3)
    task.cancel()
    assert [(e.payment_hash, e.state) for e in events] == [
        (payment_hash, InvoiceState.OPEN),
        (other_hash, InvoiceState.OPEN),
        (payment_hash, InvoiceState.SETTLED),
    ]


async def test_held_htlc_canceled_near_cltv_expiry(
    seller: LndBackend, car1: LndBackend, simnet: Simnet
) -> None:
    """The HTLC's CLTV, not the invoice expiry, is the deadline of a held payment."""
    _, payment_hash = new_secret()
    hold = await seller.create_hold_invoice(payment_hash, 5_000, cltv_expiry=40)
    payment = asyncio.create_task(car1.pay_invoice(hold.bolt11, 10_000, 5))

    async def accepted() -> bool:
        return (await seller.lookup_invoice(payment_hash)).state is InvoiceState.ACCEPTED

    await wait_for(accepted)
    simnet.mine_blocks(27)  # 40 - 27 = 13 blocks left: still held
    assert (await seller.lookup_invoice(payment_hash)).state is InvoiceState.ACCEPTED
    simnet.mine_blocks(1)  # within LND's 12-block safety margin: canceled back
    assert (await seller.lookup_invoice(payment_hash)).state is InvoiceState.CANCELED
    with pytest.raises(PaymentFailed):
        await asyncio.wait_for(payment, 5)
