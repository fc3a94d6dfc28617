"""The lnd backend against the simnet over real gRPC + TLS: node info, invoices, lookups, BOLT11."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import bolt11
import pytest

from lightning import (
    Backend,
    InvalidRequest,
    InvoiceNotFound,
    InvoiceState,
    PaymentStatus,
    PermissionDenied,
)
from lightning.lnd import LndBackend
from lightning.simnet import Simnet

from .conftest import wait_for


async def test_backend_satisfies_protocol(seller: LndBackend) -> None:
    assert isinstance(seller, Backend)


async def test_get_info(seller: LndBackend, simnet: Simnet) -> None:
    info = await seller.get_info()
    assert info.alias == "satwatt"
    assert info.pubkey == simnet.pubkey("satwatt")
    assert info.network == "regtest"
    assert info.synced is True
    assert info.block_height == 1000
    assert seller.health.reachable and seller.health.consecutive_failures == 0


async def test_create_invoice_is_real_bolt11(seller: LndBackend, simnet: Simnet) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    invoice = await seller.create_invoice(3_000, "satwatt 30 Wh", expiry_s=600)
    assert invoice.bolt11.startswith("lnbcrt30n1")
    assert invoice.state is InvoiceState.OPEN
    assert invoice.amount_msat == 3_000 and invoice.memo == "satwatt 30 Wh"
    assert invoice.add_index == 1 and invoice.settle_index == 0 and not invoice.is_hold
    assert invoice.created_at >= before - timedelta(seconds=1)
    assert invoice.expires_at - invoice.created_at == timedelta(seconds=600)
    assert invoice.preimage is not None and hashlib.sha256(invoice.preimage).digest() == invoice.payment_hash

    decoded = bolt11.decode(invoice.bolt11)  # signature checked, payee recovered from it
    assert decoded.is_regtest()
    assert decoded.amount_msat == 3_000
    assert bytes.fromhex(decoded.payment_hash) == invoice.payment_hash
    assert decoded.description == "satwatt 30 Wh"
    assert decoded.expiry == 600
    assert decoded.payee == simnet.pubkey("satwatt")
    assert decoded.payment_secret and decoded.min_final_cltv_expiry == 80


async def test_msat_precision_and_default_expiry(seller: LndBackend) -> None:
    invoice = await seller.create_invoice(1_234_567)
    assert bolt11.decode(invoice.bolt11).amount_msat == 1_234_567
    assert invoice.expires_at - invoice.created_at == timedelta(seconds=86400)


async def test_lookup_invoice(seller: LndBackend) -> None:
    created = await seller.create_invoice(5_000, "x")
    found = await seller.lookup_invoice(created.payment_hash)
    assert found == created
    with pytest.raises(InvoiceNotFound):
        await seller.lookup_invoice(bytes(32))
    with pytest.raises(InvalidRequest):
        await seller.lookup_invoice(b"short")


async def test_invalid_invoice_requests(seller: LndBackend) -> None:
    with pytest.raises(InvalidRequest):
        await seller.create_invoice(-1)
    with pytest.raises(InvalidRequest, match="too large"):
        await seller.create_invoice(2**33)
    with pytest.raises(InvalidRequest, match="memo"):
        await seller.create_invoice(1000, "m" * 700)


async def test_invoice_macaroon_can_receive_but_not_pay(make_backend, car1: LndBackend) -> None:
    receiver = make_backend("satwatt", "invoice")
    invoice = await receiver.create_invoice(2_000, "via invoice macaroon")
    assert (await receiver.lookup_invoice(invoice.payment_hash)).state is InvoiceState.OPEN
    with pytest.raises(PermissionDenied):
        await receiver.get_info()  # LND's invoice macaroon has no info:read

    payer_with_invoice_mac = make_backend("car1", "invoice")
    other = await make_backend("wallet").create_invoice(1_000)
    with pytest.raises(PermissionDenied, match="permission denied"):
        await payer_with_invoice_mac.pay_invoice(other.bolt11, fee_limit_msat=10_000, timeout_s=5)
    assert (await make_backend("wallet").lookup_invoice(other.payment_hash)).state is InvoiceState.OPEN
    # The admin macaroon of the same node may pay.
    result = await car1.pay_invoice(other.bolt11, fee_limit_msat=10_000, timeout_s=5)
    assert result.status is PaymentStatus.SUCCEEDED


async def test_readonly_macaroon_cannot_create_invoices(make_backend) -> None:
    readonly = make_backend("satwatt", "readonly")
    assert (await readonly.get_info()).alias == "satwatt"
    with pytest.raises(PermissionDenied):
        await readonly.create_invoice(1000)


async def test_macaroon_selects_node(make_backend, simnet: Simnet) -> None:
    for name in ("satwatt", "car1", "car2", "wallet"):
        assert (await make_backend(name).get_info()).pubkey == simnet.pubkey(name)
    # Invoices are per node: car1 does not see satwatt's invoices.
    invoice = await make_backend("satwatt").create_invoice(1000)
    with pytest.raises(InvoiceNotFound):
        await make_backend("car1").lookup_invoice(invoice.payment_hash)


async def test_forged_macaroon_is_denied(simnet: Simnet, tmp_path) -> None:
    from lightning.lnd import LndConfig
    from lightning.simnet import macaroons

    forged = macaroons.bake("satwatt", b"\x00" * 32, macaroons.ADMIN_PERMS)
    path = tmp_path / "forged.macaroon"
    path.write_bytes(forged)
    backend = LndBackend(LndConfig.from_paths(simnet.address, simnet.tls_cert_path, path))
    try:
        with pytest.raises(PermissionDenied, match="verification failed"):
            await backend.get_info()
    finally:
        await backend.close()


async def test_decode_payreq(seller: LndBackend, simnet: Simnet) -> None:
    from lightning import decode_payreq

    invoice = await seller.create_invoice(30_000, "30 Wh", expiry_s=600)
    req = decode_payreq(invoice.bolt11)
    assert req.payment_hash == invoice.payment_hash and req.amount_msat == 30_000
    assert req.payee == simnet.pubkey("satwatt") and req.network == "regtest"
    assert req.description == "30 Wh" and req.expires_at == invoice.expires_at
    assert not req.is_expired()
    with pytest.raises(InvalidRequest):
        decode_payreq("lnbcrt1garbage")
    tampered = invoice.bolt11[:-8] + ("q" if invoice.bolt11[-8] != "q" else "p") + invoice.bolt11[-7:]
    with pytest.raises(InvalidRequest):
        decode_payreq(tampered)  # checksum


async def test_one_long_lived_channel(seller: LndBackend) -> None:
    await seller.get_info()
    channel = seller._channel
    for _ in range(5):
        await seller.create_invoice(1_000)
    assert seller._channel is channel is not None


async def test_rpc_latency_injection(seller: LndBackend, simnet: Simnet) -> None:
    import time

    simnet.faults.rpc_latency_s = 0.2
    started = time.monotonic()
    await seller.get_info()
    assert time.monotonic() - started >= 0.2


async def test_macaroon_never_logged(simnet: Simnet, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from lightning import BackendUnavailable
    from lightning.lnd import LndConfig, RetryPolicy

    config = LndConfig.from_simnet(simnet, "satwatt")
    secret = config.macaroon.hex()
    backend = LndBackend(config, retry=RetryPolicy(initial_backoff_s=0.02, unavailable_timeout_s=0.2))
    caplog.set_level(logging.DEBUG)
    simnet.set_unavailable(True)
    try:
        with pytest.raises(BackendUnavailable) as info:
            await backend.get_info()
    finally:
        simnet.set_unavailable(False)
        await backend.close()
    assert "unavailable" in caplog.text.lower()
    for text in (caplog.text, str(info.value), repr(config), str(backend.health), repr(backend.__dict__)):
        assert secret not in text


async def test_payment_hash_of_matches_full_decode(seller: LndBackend) -> None:
    from lightning.payreq import payment_hash_of

    for amount, memo in ((3_000, "x"), (0, ""), (123_456_789, "m" * 600)):
        invoice = await seller.create_invoice(amount, memo)
        assert payment_hash_of(invoice.bolt11) == invoice.payment_hash
        assert payment_hash_of(invoice.bolt11.upper()) == invoice.payment_hash
        assert bytes.fromhex(bolt11.decode(invoice.bolt11).payment_hash) == invoice.payment_hash
    broken = invoice.bolt11[:-1] + ("q" if invoice.bolt11[-1] != "q" else "p")
    for bad in (broken, "lnbcrt1qqqq", "hello", ""):
        with pytest.raises(InvalidRequest):
            payment_hash_of(bad)


async def test_create_invoice_with_caller_preimage_is_idempotent(seller: LndBackend) -> None:
    """A preimage derived from an idempotency key fixes the hash: a re-creation after a crash is
    refused (DuplicateInvoice) and the caller looks the first one up."""
    from lightning import DuplicateInvoice

    preimage = hashlib.sha256(b"server secret|session 7|invoice 3").digest()
    invoice = await seller.create_invoice(3_000, "30 Wh", 600, preimage=preimage)
    assert invoice.payment_hash == hashlib.sha256(preimage).digest()
    assert invoice.preimage == preimage and not invoice.is_hold
    with pytest.raises(DuplicateInvoice):
        await seller.create_invoice(3_000, "30 Wh", 600, preimage=preimage)
    assert await seller.lookup_invoice(invoice.payment_hash) == invoice
    with pytest.raises(InvalidRequest):
        await seller.create_invoice(3_000, preimage=b"short")


async def test_calls_are_pipelined_on_one_channel(seller: LndBackend, simnet: Simnet) -> None:
    """Many calls in flight at once over the one channel: nothing in the backend serialises them."""
    await seller.get_info()
    simnet.stall_calls()  # every call waits inside the node until resumed
    calls = [asyncio.ensure_future(seller.create_invoice(1_000 + i, f"pipelined {i}")) for i in range(64)]
    try:
        await wait_for(lambda: simnet.rpcs_delayed == 64)  # all 64 inside the node together
    finally:
        simnet.resume_calls()
    invoices = await asyncio.gather(*calls)
    assert len({inv.payment_hash for inv in invoices}) == 64
    assert len(simnet.client_connections) == 1  # one connection carried them all


async def test_time_before_caveat_holds_after_the_first_verification(simnet: Simnet, tmp_path) -> None:
    """Verified macaroons are remembered, but a time-before caveat is checked on every call."""
    from lightning.lnd import LndConfig
    from lightning.simnet import macaroons

    admin = simnet.macaroon_path("satwatt").read_bytes()
    until = datetime.now(UTC) + timedelta(seconds=1)
    path = tmp_path / "short.macaroon"
    path.write_bytes(macaroons.attenuate_time_before(admin, until))
    expired = tmp_path / "expired.macaroon"
    expired.write_bytes(macaroons.attenuate_time_before(admin, datetime.now(UTC) - timedelta(seconds=1)))
    short = LndBackend(LndConfig.from_paths(simnet.address, simnet.tls_cert_path, path))
    old = LndBackend(LndConfig.from_paths(simnet.address, simnet.tls_cert_path, expired))
    try:
        with pytest.raises(PermissionDenied, match="verification failed"):
            await old.get_info()
        assert (await short.get_info()).alias == "satwatt"  # verified, now remembered

        async def denied() -> bool:
            try:
                await short.get_info()
            except PermissionDenied:
                return True
            return False

        await wait_for(denied, timeout=10)
        assert datetime.now(UTC) >= until  # denied only once the caveat's time had come
    finally:
        await short.close()
        await old.close()
