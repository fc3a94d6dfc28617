"""Payments between simnet nodes through the lnd backend: fees, limits, timeouts, failures."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time

import bolt11
import coincurve
import grpc
import pytest
from bolt11 import Bolt11, MilliSatoshi, TagChar, Tags

from lightning import InvalidRequest, InvoiceState, PaymentFailed, PaymentStatus
from lightning._protos import ln, ln_grpc
from lightning.lnd import LndBackend
from lightning.simnet import Simnet

from .conftest import wait_for


async def test_pay_settles_moves_balances_and_charges_fee(
    seller: LndBackend, car1: LndBackend, simnet: Simnet
) -> None:
    seller_before = simnet.balance_msat("satwatt")
    car_before = simnet.balance_msat("car1")
    invoice = await seller.create_invoice(3_000_000, "charge")
    result = await car1.pay_invoice(invoice.bolt11, fee_limit_msat=10_000, timeout_s=10)

    assert result.status is PaymentStatus.SUCCEEDED
    assert result.payment_hash == invoice.payment_hash
    assert result.preimage is not None and hashlib.sha256(result.preimage).digest() == invoice.payment_hash
    assert result.amount_msat == 3_000_000
    assert result.fee_msat == 1_000 + 3  # base fee 1 sat + 1 ppm, one intermediate hop
    assert result.failure_reason is None

    settled = await seller.lookup_invoice(invoice.payment_hash)
    assert settled.state is InvoiceState.SETTLED
    assert settled.amount_paid_msat == 3_000_000 and settled.settle_index == 1
    assert settled.settled_at is not None and settled.preimage == result.preimage
    assert simnet.balance_msat("satwatt") == seller_before + 3_000_000
    assert simnet.balance_msat("car1") == car_before - 3_000_000 - result.fee_msat


async def test_fee_limit_below_route_fee_fails_no_route(seller: LndBackend, car1: LndBackend) -> None:
    invoice = await seller.create_invoice(10_000)
    with pytest.raises(PaymentFailed) as info:
        await car1.pay_invoice(invoice.bolt11, fee_limit_msat=999, timeout_s=10)
    assert info.value.reason == "FAILURE_REASON_NO_ROUTE"
    assert info.value.result is not None and info.value.result.status is PaymentStatus.FAILED
    assert (await seller.lookup_invoice(invoice.payment_hash)).state is InvoiceState.OPEN
    # The same invoice can be paid again once the limit is enough (LND allows retrying failures).
    ok = await car1.pay_invoice(invoice.bolt11, fee_limit_msat=1_000, timeout_s=10)
    assert ok.status is PaymentStatus.SUCCEEDED and ok.fee_msat == 1_000


async def test_timeout(seller: LndBackend, car1: LndBackend, simnet: Simnet) -> None:
    simnet.faults.payment_latency_s = 5.0
    invoice = await seller.create_invoice(10_000)
    started = time.monotonic()
    with pytest.raises(PaymentFailed) as info:
        await car1.pay_invoice(invoice.bolt11, fee_limit_msat=10_000, timeout_s=1)
    assert info.value.reason == "FAILURE_REASON_TIMEOUT"
    assert 0.9 <= time.monotonic() - started < 4
    assert (await seller.lookup_invoice(invoice.payment_hash)).state is InvoiceState.OPEN


async def test_latency_within_timeout_succeeds(seller: LndBackend, car1: LndBackend, simnet: Simnet) -> None:
    simnet.faults.payment_latency_s = 0.3
    invoice = await seller.create_invoice(10_000)
    started = time.monotonic()
    result = await car1.pay_invoice(invoice.bolt11, fee_limit_msat=10_000, timeout_s=5)
    assert result.status is PaymentStatus.SUCCEEDED
    assert time.monotonic() - started >= 0.3


async def test_injected_failures(seller: LndBackend, car1: LndBackend, simnet: Simnet) -> None:
    simnet.faults.fail_next_payments = 2
    simnet.faults.payment_failure_reason = "FAILURE_REASON_ERROR"
    invoice = await seller.create_invoice(10_000)
    for _ in range(2):
        with pytest.raises(PaymentFailed, match="FAILURE_REASON_ERROR"):
            await car1.pay_invoice(invoice.bolt11, fee_limit_msat=10_000, timeout_s=5)
    assert (await car1.pay_invoice(invoice.bolt11, 10_000, 5)).status is PaymentStatus.SUCCEEDED


async def test_failure_rate(seller: LndBackend, car1: LndBackend, simnet: Simnet) -> None:
    simnet.faults.payment_failure_rate = 0.5
    outcomes = []
    for _ in range(30):
        invoice = await seller.create_invoice(1_000)
        try:
            await car1.pay_invoice(invoice.bolt11, 10_000, 5)
            outcomes.append(True)
        except PaymentFailed as exc:
            assert exc.reason == "FAILURE_REASON_NO_ROUTE"
            outcomes.append(False)
    assert 5 <= sum(outcomes) <= 25  # seeded RNG: both outcomes happen


async def test_insufficient_balance(make_backend, seller: LndBackend) -> None:
    poor = make_backend("car2")  # 10 sat
    invoice = await seller.create_invoice(20_000)
    with pytest.raises(PaymentFailed, match="FAILURE_REASON_INSUFFICIENT_BALANCE"):
        await poor.pay_invoice(invoice.bolt11, 10_000, 5)


async def test_already_paid(seller: LndBackend, car1: LndBackend, make_backend, simnet: Simnet) -> None:
    invoice = await seller.create_invoice(7_000)
    first = await car1.pay_invoice(invoice.bolt11, 10_000, 5)
    balance = simnet.balance_msat("car1")
    # Same payer again: LND answers "already paid"; the backend returns that payment (idempotent).
    again = await car1.pay_invoice(invoice.bolt11, 10_000, 5)
    assert again == first
    assert simnet.balance_msat("car1") == balance
    # Another payer: the payee rejects the HTLC.
    with pytest.raises(PaymentFailed, match="FAILURE_REASON_INCORRECT_PAYMENT_DETAILS"):
        await make_backend("wallet").pay_invoice(invoice.bolt11, 10_000, 5)


async def test_expired_invoice_is_refused_and_canceled(seller: LndBackend, car1: LndBackend) -> None:
    invoice = await seller.create_invoice(1_000, expiry_s=1)
    await wait_for(lambda: bolt11.decode(invoice.bolt11).has_expired(), timeout=3)
    with pytest.raises(InvalidRequest, match="invoice expired"):
        await car1.pay_invoice(invoice.bolt11, 10_000, 5)

    async def canceled() -> bool:
        return (await seller.lookup_invoice(invoice.payment_hash)).state is InvoiceState.CANCELED

    await wait_for(canceled, timeout=3)  # LND's expiry watcher cancels expired open invoices


async def test_unknown_destination_and_self_payment(seller: LndBackend, car1: LndBackend) -> None:
    key = coincurve.PrivateKey()
    tags = Tags()
    tags.add(TagChar.payment_hash, secrets.token_hex(32))
    tags.add(TagChar.payment_secret, secrets.token_hex(32))
    tags.add(TagChar.description, "elsewhere")
    foreign = bolt11.encode(
        Bolt11(currency="bcrt", date=int(time.time()), tags=tags, amount_msat=MilliSatoshi(1000)),
        key.secret.hex(),
    )
    with pytest.raises(PaymentFailed, match="FAILURE_REASON_NO_ROUTE"):
        await car1.pay_invoice(foreign, 10_000, 5)
    own = await seller.create_invoice(1_000)
    with pytest.raises(PaymentFailed, match="FAILURE_REASON_NO_ROUTE"):
        await seller.pay_invoice(own.bolt11, 10_000, 5)


async def test_zero_amount_invoice(seller: LndBackend, car1: LndBackend) -> None:
    invoice = await seller.create_invoice(0, "any amount")
    with pytest.raises(InvalidRequest, match="amount must be specified"):
        await car1.pay_invoice(invoice.bolt11, 10_000, 5)
    result = await car1.pay_invoice(invoice.bolt11, 10_000, 5, amount_msat=4_321)
    assert result.amount_msat == 4_321
    assert (await seller.lookup_invoice(invoice.payment_hash)).amount_paid_msat == 4_321


async def test_send_payment_sync_and_decode_with_raw_stubs(seller: LndBackend, simnet: Simnet) -> None:
    """The same LND messages over plain generated stubs (what other LND clients would use)."""
    invoice = await seller.create_invoice(2_000, "raw")
    mac = simnet.macaroon_path("car1").read_bytes().hex()
    creds = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(simnet.tls_cert_path.read_bytes()),
        grpc.metadata_call_credentials(lambda _ctx, cb: cb((("macaroon", mac),), None)),
    )
    async with grpc.aio.secure_channel(simnet.address, creds) as channel:
        stub = ln_grpc.LightningStub(channel)
        decoded = await stub.DecodePayReq(ln.PayReqString(pay_req=invoice.bolt11))
        assert decoded.destination == simnet.pubkey("satwatt")
        assert decoded.num_msat == 2_000 and decoded.description == "raw" and decoded.expiry == 86400
        assert bytes.fromhex(decoded.payment_hash) == invoice.payment_hash

        before = (await stub.ChannelBalance(ln.ChannelBalanceRequest())).local_balance.msat
        resp = await stub.SendPaymentSync(
            ln.SendRequest(payment_request=invoice.bolt11, fee_limit=ln.FeeLimit(fixed=5))
        )
        assert resp.payment_error == ""
        assert hashlib.sha256(resp.payment_preimage).digest() == invoice.payment_hash
        assert resp.payment_route.total_fees_msat == 1_000
        after = (await stub.ChannelBalance(ln.ChannelBalanceRequest())).local_balance.msat
        assert before - after == 3_000

        again = await stub.SendPaymentSync(ln.SendRequest(payment_request=invoice.bolt11))
        assert again.payment_error == "invoice is already paid"
        other = await seller.create_invoice(2_000)
        low = await stub.SendPaymentSync(
            ln.SendRequest(payment_request=other.bolt11, fee_limit=ln.FeeLimit(fixed_msat=1))
        )
        assert low.payment_error == "no_route"
        assert (await stub.WalletBalance(ln.WalletBalanceRequest())).confirmed_balance > 0


async def test_concurrent_payments(seller: LndBackend, car1: LndBackend, make_backend) -> None:
    wallet = make_backend("wallet")
    invoices = [await seller.create_invoice(1_000 + i) for i in range(20)]
    payers = [car1, wallet]
    results = await asyncio.gather(
        *(payers[i % 2].pay_invoice(inv.bolt11, 5_000, 5) for i, inv in enumerate(invoices))
    )
    assert all(r.status is PaymentStatus.SUCCEEDED for r in results)
    settle_indexes = sorted([(await seller.lookup_invoice(i.payment_hash)).settle_index for i in invoices])
    assert settle_indexes == list(range(1, 21))


async def test_lost_responses_never_duplicate(seller: LndBackend, car1: LndBackend, simnet: Simnet) -> None:
    """The node did the work but the answer was lost: the backend's retries must not do it twice."""
    # A payment whose SendPaymentV2 stream breaks: the backend follows it with TrackPaymentV2.
    invoice = await seller.create_invoice(9_000)
    before = simnet.balance_msat("car1")
    simnet.faults.lose_next_responses = 1
    result = await car1.pay_invoice(invoice.bolt11, 10_000, 5)
    assert result.status is PaymentStatus.SUCCEEDED
    assert simnet.balance_msat("car1") == before - 9_000 - result.fee_msat  # paid once
    assert simnet.faults.lose_next_responses == 0

    # An idempotent invoice whose AddInvoice answer is lost: the retry finds our own invoice.
    preimage = hashlib.sha256(b"key-1").digest()
    simnet.faults.lose_next_responses = 1
    created = await seller.create_invoice(4_000, "k1", preimage=preimage)
    assert created.payment_hash == hashlib.sha256(preimage).digest() and created.add_index == 2
    # A hold invoice likewise; and settle / cancel are idempotent anyway.
    hold_pre = secrets.token_bytes(32)
    simnet.faults.lose_next_responses = 1
    hold = await seller.create_hold_invoice(hashlib.sha256(hold_pre).digest(), 5_000, "deposit")
    assert hold.add_index == 3 and hold.state is InvoiceState.OPEN
    simnet.faults.lose_next_responses = 1
    await seller.cancel_hold_invoice(hold.payment_hash)
    assert (await seller.lookup_invoice(hold.payment_hash)).state is InvoiceState.CANCELED
    invoices, _, _ = await seller.list_invoices()
    assert len(invoices) == 3  # nothing created twice


async def test_created_invoice_is_what_the_node_records(seller: LndBackend, simnet: Simnet) -> None:
    """create_invoice is one AddInvoice; what it returns is exactly LookupInvoice's record."""
    for amount, memo, expiry in ((3_000, "30 Wh", 600), (0, "", 86_400), (1, "é ⚡", 31_536_000)):
        created = await seller.create_invoice(amount, memo, expiry_s=expiry)
        assert created == await seller.lookup_invoice(created.payment_hash)
    # Without a preimage of the caller's, a retry after a lost answer still creates one invoice.
    before = len((await seller.list_invoices())[0])
    simnet.faults.lose_next_responses = 1
    created = await seller.create_invoice(7_000, "lost answer")
    assert simnet.faults.lose_next_responses == 0
    assert created == await seller.lookup_invoice(created.payment_hash)
    assert len((await seller.list_invoices())[0]) == before + 1
