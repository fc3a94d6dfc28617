"""The simnet answers like LND, checked with the plain generated stubs (no satwatt code in between)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator

import grpc
import pytest

from lightning._protos import inv, inv_grpc, ln, ln_grpc, router, router_grpc, state, state_grpc
from lightning.simnet import Simnet

from .conftest import wait_for


class Stubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.ln = ln_grpc.LightningStub(channel)
        self.inv = inv_grpc.InvoicesStub(channel)
        self.router = router_grpc.RouterStub(channel)
        self.state = state_grpc.StateStub(channel)


def channel_for(simnet: Simnet, node: str, kind: str = "admin") -> grpc.aio.Channel:
    mac = simnet.macaroon_path(node, kind).read_bytes().hex()
    creds = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(simnet.tls_cert_path.read_bytes()),
        grpc.metadata_call_credentials(lambda _ctx, cb: cb((("macaroon", mac),), None)),
    )
    return grpc.aio.secure_channel(simnet.address, creds)


@pytest.fixture
async def seller(simnet: Simnet) -> AsyncIterator[Stubs]:
    async with channel_for(simnet, "satwatt") as channel:
        yield Stubs(channel)


@pytest.fixture
async def payer(simnet: Simnet) -> AsyncIterator[Stubs]:
    async with channel_for(simnet, "car1") as channel:
        yield Stubs(channel)


async def test_add_invoice_rules(seller: Stubs) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await seller.ln.AddInvoice(ln.Invoice(value=1, value_msat=1000))
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    assert info.value.details() == "sat and msat arguments are mutually exclusive"
    by_sat = await seller.ln.AddInvoice(ln.Invoice(value=5))
    looked = await seller.ln.LookupInvoice(ln.PaymentHash(r_hash=by_sat.r_hash))
    assert looked.value == 5 and looked.value_msat == 5_000 and looked.expiry == 86400
    assert looked.state == ln.Invoice.OPEN and len(looked.r_preimage) == 32
    assert by_sat.add_index == 1 and len(by_sat.payment_addr) == 32
    preimage = secrets.token_bytes(32)
    mine = await seller.ln.AddInvoice(ln.Invoice(value_msat=1, r_preimage=preimage))
    assert mine.r_hash == hashlib.sha256(preimage).digest()
    with pytest.raises(grpc.aio.AioRpcError, match="already exists"):
        await seller.ln.AddInvoice(ln.Invoice(value_msat=1, r_preimage=preimage))
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await seller.ln.LookupInvoice(ln.PaymentHash(r_hash=bytes(32)))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert missing.value.details() == "unable to locate invoice"


async def test_no_macaroon(simnet: Simnet) -> None:
    creds = grpc.ssl_channel_credentials(simnet.tls_cert_path.read_bytes())
    async with grpc.aio.secure_channel(simnet.address, creds) as channel:
        with pytest.raises(grpc.aio.AioRpcError, match="expected 1 macaroon, got 0"):
            await ln_grpc.LightningStub(channel).GetInfo(ln.GetInfoRequest())
        # The state service needs no macaroon, as in LND.
        resp = await state_grpc.StateStub(channel).GetState(state.GetStateRequest())
        assert resp.state == state.SERVER_ACTIVE


async def test_list_invoices_paging(seller: Stubs) -> None:
    for i in range(5):
        await seller.ln.AddInvoice(ln.Invoice(value_msat=1000 + i))
    page = await seller.ln.ListInvoices(ln.ListInvoiceRequest(index_offset=1, num_max_invoices=2))
    assert [i.add_index for i in page.invoices] == [2, 3]
    assert (page.first_index_offset, page.last_index_offset) == (2, 3)
    last = await seller.ln.ListInvoices(ln.ListInvoiceRequest(reversed=True, num_max_invoices=2))
    assert [i.add_index for i in last.invoices] == [4, 5]
    before = await seller.ln.ListInvoices(ln.ListInvoiceRequest(reversed=True, index_offset=4))
    assert [i.add_index for i in before.invoices] == [1, 2, 3]


async def test_subscribe_invoices_replay_rules(seller: Stubs, payer: Stubs, simnet: Simnet) -> None:
    added = [await seller.ln.AddInvoice(ln.Invoice(value_msat=1000)) for _ in range(4)]
    for a in added[:3]:
        await payer.ln.SendPaymentSync(ln.SendRequest(payment_request=a.payment_request))
    # add_index 2 and settle_index 1: adds 3, 4 (current state), then settles 2, 3.
    call = seller.ln.SubscribeInvoices(ln.InvoiceSubscription(add_index=2, settle_index=1))
    got = []
    async with asyncio.timeout(5):
        async for msg in call:
            got.append((msg.add_index, msg.settle_index, ln.Invoice.InvoiceState.Name(msg.state)))
            if len(got) == 4:
                break
    call.cancel()
    assert got == [(3, 3, "SETTLED"), (4, 0, "OPEN"), (2, 2, "SETTLED"), (3, 3, "SETTLED")]
    # 0 and 0: no backlog at all, only live events.
    live = seller.ln.SubscribeInvoices(ln.InvoiceSubscription())
    await wait_for(lambda: simnet.invoice_subscribers("satwatt") == 1)
    await seller.ln.AddInvoice(ln.Invoice(value_msat=1))
    async with asyncio.timeout(5):
        first = await live.read()
    assert first.add_index == 5
    live.cancel()


async def test_hold_invoice_rpc_rules(seller: Stubs, payer: Stubs) -> None:
    preimage = secrets.token_bytes(32)
    payment_hash = hashlib.sha256(preimage).digest()
    with pytest.raises(grpc.aio.AioRpcError, match="hash"):
        await seller.inv.AddHoldInvoice(inv.AddHoldInvoiceRequest(hash=b"short", value_msat=1000))
    resp = await seller.inv.AddHoldInvoice(inv.AddHoldInvoiceRequest(hash=payment_hash, value=10))
    assert resp.add_index == 1 and resp.payment_request.startswith("lnbcrt100n1")
    v2 = await seller.inv.LookupInvoiceV2(inv.LookupInvoiceMsg(payment_hash=payment_hash))
    assert v2.r_preimage == b"" and v2.state == ln.Invoice.OPEN  # LND knows no preimage yet
    by_addr = await seller.inv.LookupInvoiceV2(inv.LookupInvoiceMsg(payment_addr=resp.payment_addr))
    assert by_addr.r_hash == payment_hash
    with pytest.raises(grpc.aio.AioRpcError, match="invoice still open"):
        await seller.inv.SettleInvoice(inv.SettleInvoiceMsg(preimage=preimage))

    single = seller.inv.SubscribeSingleInvoice(inv.SubscribeSingleInvoiceRequest(r_hash=payment_hash))
    assert (await single.read()).state == ln.Invoice.OPEN  # current state first
    pay = payer.router.SendPaymentV2(
        router.SendPaymentRequest(payment_request=resp.payment_request, fee_limit_sat=10, timeout_seconds=5)
    )
    assert (await pay.read()).status == ln.Payment.IN_FLIGHT
    accepted = await single.read()
    assert accepted.state == ln.Invoice.ACCEPTED and accepted.htlcs[0].amt_msat == 10_000
    await seller.inv.SettleInvoice(inv.SettleInvoiceMsg(preimage=preimage))
    assert (await single.read()).state == ln.Invoice.SETTLED
    assert await single.read() is grpc.aio.EOF  # the stream ends after a final state
    final = await pay.read()
    while final.status == ln.Payment.IN_FLIGHT:  # LND sends an update per HTLC attempt change
        final = await pay.read()
    assert final.status == ln.Payment.SUCCEEDED and final.payment_preimage == preimage.hex()
    assert final.fee_msat == 1_000

    tracked = payer.router.TrackPaymentV2(router.TrackPaymentRequest(payment_hash=payment_hash))
    assert (await tracked.read()).status == ln.Payment.SUCCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in payer.router.TrackPaymentV2(router.TrackPaymentRequest(payment_hash=bytes(32))):
            pass
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_send_payment_v2_rules(seller: Stubs, payer: Stubs) -> None:
    added = await seller.ln.AddInvoice(ln.Invoice(value_msat=1000))
    with pytest.raises(grpc.aio.AioRpcError, match="timeout_seconds must be specified"):
        async for _ in payer.router.SendPaymentV2(
            router.SendPaymentRequest(payment_request=added.payment_request)
        ):
            pass
    with pytest.raises(grpc.aio.AioRpcError, match="mutually exclusive"):
        async for _ in payer.router.SendPaymentV2(
            router.SendPaymentRequest(
                payment_request=added.payment_request, fee_limit_sat=1, fee_limit_msat=1, timeout_seconds=5
            )
        ):
            pass
    ok = [
        p.status
        async for p in payer.router.SendPaymentV2(
            router.SendPaymentRequest(
                payment_request=added.payment_request, fee_limit_sat=2, timeout_seconds=5
            )
        )
    ]
    assert ok == [ln.Payment.IN_FLIGHT, ln.Payment.SUCCEEDED]
    with pytest.raises(grpc.aio.AioRpcError) as again:
        async for _ in payer.router.SendPaymentV2(
            router.SendPaymentRequest(
                payment_request=added.payment_request, fee_limit_sat=2, timeout_seconds=5
            )
        ):
            pass
    assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert again.value.details() == "invoice is already paid"


async def test_timed_outage_and_starting_up_state(simnet: Simnet, seller: Stubs) -> None:
    await simnet.outage(0.3)
    assert not simnet.is_serving
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await seller.ln.GetInfo(ln.GetInfoRequest())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    await wait_for(lambda: simnet.is_serving, timeout=3)
    simnet.set_starting_up(True)
    resp = await seller.state.GetState(state.GetStateRequest(), wait_for_ready=True, timeout=5)
    assert resp.state == state.RPC_ACTIVE
    with pytest.raises(grpc.aio.AioRpcError, match="in the process of starting up"):
        await seller.ln.GetInfo(ln.GetInfoRequest())
    simnet.set_starting_up(False)
    assert (await seller.ln.GetInfo(ln.GetInfoRequest())).alias == "satwatt"


async def test_single_invoice_stream_shows_a_change_once(seller: Stubs, simnet: Simnet) -> None:
    """A change is published when committed; a stream that already showed it does not repeat it."""
    net = simnet.network
    assert net is not None
    store = net.store
    await net.durable()
    store.siblings, store.commit_interval_s = (lambda: 100), 3600.0  # hold the next commit
    row = net.add_invoice("satwatt", value_msat=2_000)  # in memory, its add event not yet published
    stream = seller.inv.SubscribeSingleInvoice(inv.SubscribeSingleInvoiceRequest(r_hash=row.r_hash))
    try:
        first = await stream.read()
        assert first.state == ln.Invoice.OPEN
        store.commit_interval_s = 0.0
        store.flush()  # publishes the add event: already shown, so not sent again
        await simnet.pay_direct("car1", row.payment_request)
        second = await stream.read()
        assert second.state == ln.Invoice.SETTLED  # not a second OPEN
    finally:
        stream.cancel()
