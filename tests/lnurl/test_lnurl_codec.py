"""LUD-01 encoding against the spec's own example, LUD-17, LUD-06 metadata, and the refund rules (pure)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest

from csms import lnurl
from csms.settlement.refunds import WITHDRAW_WINDOW, check_invoice, fee_limit_msat, refundable_of
from csms.settlement.session import (
    SessionSettlement,
    open_prepaid_session,
    record_payment,
    record_prepay_invoice,
    record_transaction_ended,
    record_transaction_started,
)
from csms.settlement.tariff import Tariff
from lightning.payreq import PayReq

# lnurl/luds spec.md (LUD-01): this URL and its bech32 form
SPEC_URL = "https://service.com/api?q=3fc3645b439ce8e7f2553a69e5267081d96dcd340693afabe04be7b0ccd178df"
SPEC_LNURL = (
    "LNURL1DP68GURN8GHJ7UM9WFMXJCM99E3K7MF0V9CXJ0M385EKVCENXC6R2C35XVUKXEFCV5MKVV34X5EKZD3EV56NYD3HXQURZE"
    "PEXEJXXEPNXSCRVWFNV9NXZCN9XQ6XYEFHVGCXXCMYXYMNSERXFQ5FNS"
)
T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)


def test_lud01_example_vector() -> None:
    assert lnurl.encode(SPEC_URL) == SPEC_LNURL
    assert lnurl.decode(SPEC_LNURL) == SPEC_URL
    assert lnurl.decode(SPEC_LNURL.lower()) == SPEC_URL
    assert lnurl.decode("lightning:" + SPEC_LNURL) == SPEC_URL
    assert lnurl.lightning_uri(SPEC_URL) == "lightning:" + SPEC_LNURL


@pytest.mark.parametrize(
    "bad", [SPEC_LNURL[:-1] + "Q", SPEC_LNURL[:10] + SPEC_LNURL[10:].lower(), "LNBC1XYZ", "nonsense"]
)
def test_bad_lnurls_are_refused(bad: str) -> None:
    with pytest.raises(lnurl.LnurlError):
        lnurl.decode(bad)


def test_lud17_and_fallback() -> None:
    assert lnurl.lud17("https://sw.example/lnurlp/CP-1/1", "p") == "lnurlp://sw.example/lnurlp/CP-1/1"
    assert lnurl.lud17("https://sw.example/lnurlw/s?k1=ab", "w") == "lnurlw://sw.example/lnurlw/s?k1=ab"
    fallback = lnurl.https_fallback("https://sw.example/lnurlp/CP-1/1", "https://sw.example")
    assert fallback.startswith("https://sw.example/?lightning=LNURL1")


@pytest.mark.parametrize(
    ("base", "refused"),
    [
        ("https://charge.example.com", False),
        ("https://charge.example.com:8443/satwatt", False),
        ("http://abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvwx.onion", False),
        ("http://charge.example.com", True),
        ("http://127.0.0.1:8180", True),
        ("ftp://charge.example.com", True),
    ],
)
def test_wallets_take_lnurl_over_https_or_an_onion_only(base: str, refused: bool) -> None:
    refusal = lnurl.wallet_refusal(base)
    assert (refusal is not None) == refused
    if refusal is not None:
        assert base in refusal and "LUD-01" in refusal


def test_lud06_metadata_and_its_hash() -> None:
    metadata = lnurl.pay_metadata("Charge at CP-1 connector 1, 100 sat/kWh", "longer")
    assert json.loads(metadata) == [
        ["text/plain", "Charge at CP-1 connector 1, 100 sat/kWh"],
        ["text/long-desc", "longer"],
    ]
    assert lnurl.description_hash(metadata) == hashlib.sha256(metadata.encode("utf-8")).digest()
    assert lnurl.error("why") == {"status": "ERROR", "reason": "why"}


def _ended(prepay_msat: int, used_wh: int, start: datetime = T0) -> tuple[SessionSettlement, Tariff]:
    tariff = Tariff(price_msat_per_kwh=100_000)
    state = open_prepaid_session("S", start)
    state = record_prepay_invoice(state, prepay_msat, 100_000, 0, start, start + timedelta(minutes=10))
    state = record_payment(state, state.invoices[0].key, start)
    state = record_transaction_started(state, start)
    return record_transaction_ended(state, start + timedelta(hours=1), used_wh), tariff


def test_refundable_is_the_bill_less_what_was_refunded() -> None:
    state, tariff = _ended(5_000_099, 20_000)  # 99 msat below one Wh's price: refunded too
    now = T0 + timedelta(hours=2)
    assert refundable_of(state, tariff, 0, now).amount_msat == 3_000_099
    assert refundable_of(state, tariff, 3_000_099, now).reason == "already withdrawn"
    late = T0 + timedelta(hours=1) + WITHDRAW_WINDOW + timedelta(seconds=1)
    assert refundable_of(state, tariff, 0, late).reason == "this withdraw link has expired"


def _payreq(amount_msat: int, expires_in_s: int, network: str = "regtest") -> PayReq:
    return PayReq(
        payment_hash=b"\x01" * 32,
        amount_msat=amount_msat,
        payee="02" + "00" * 32,
        description="",
        created_at=T0,
        expires_at=T0 + timedelta(seconds=expires_in_s),
        network=network,
        min_final_cltv_expiry=18,
    )


def test_a_submitted_invoice_must_fit_the_refund() -> None:
    assert check_invoice(_payreq(3_000, 3600), 3_000, "regtest", T0) is None
    assert "3001 msat" in str(check_invoice(_payreq(3_001, 3600), 3_000, "regtest", T0))
    assert "amount" in str(check_invoice(_payreq(0, 3600), 3_000, "regtest", T0))
    assert "expired" in str(check_invoice(_payreq(3_000, 30), 3_000, "regtest", T0))
    assert "mainnet" in str(check_invoice(_payreq(3_000, 3600, "mainnet"), 3_000, "regtest", T0))
    assert fee_limit_msat(3_000) == 10_000 and fee_limit_msat(10_000_000) == 100_000


def test_a_refund_not_withdrawn_in_time_is_shown_as_retained_with_its_reason() -> None:
    from csms.api.sessions import session_out
    from csms.db.models import ChargingSession, Settlement

    state, tariff = _ended(5_000_000, 20_000, datetime.now(UTC) - WITHDRAW_WINDOW - timedelta(days=1))
    session = ChargingSession(
        number=1,
        id="S",
        charger_id="CP",
        connector_id=1,
        state="ended",
        created_at=T0,
        energy_wh=20_000,
        offline_events=0,
    )
    settlement = Settlement(
        session_number=1, tariff=tariff.to_dict(), state=state.to_dict(), closed=True, bill=None
    )
    out = session_out(session, settlement, refunded=1_000_000)
    assert (out.refundable_msat, out.retained_msat, out.retained_reason) == (
        0,
        2_000_000,
        "withdraw window expired",
    )
    assert out.paid_msat is not None and out.refunded_msat is not None and out.unpaid_msat is not None
    assert out.paid_msat - out.refunded_msat - out.refundable_msat - out.retained_msat + out.unpaid_msat == (
        out.cost_msat
    )


def test_the_dashboard_counts_refunds_and_keeps_deposits_out_of_billed_energy() -> None:
    from csms.db.models import SessionEvent
    from csms.web.dashboard_data import Today, midnight

    now = datetime.now(UTC)
    today = Today(day=midnight(now))
    events = [
        ("invoice", {"kind": "deposit", "amount_msat": 25_000_000}),
        ("invoice", {"kind": "final", "amount_msat": 2_000_000}),
        ("paid", {"amount_msat": 2_000_000}),
        ("refunded", {"key": "S/refund/1", "status": "paid", "amount_msat": 3_000_000, "fee_msat": 1_000}),
    ]
    for number, (kind, data) in enumerate(events, start=1):
        today.take(SessionEvent(id=number, session_number=1, kind=kind, data=data, created_at=now))
    assert (today.billed_msat, today.paid_msat, today.refunded_msat, today.deposits_msat) == (
        2_000_000,
        2_000_000,
        3_000_000,
        25_000_000,
    )
    assert len(today.invoices) == 2  # the deposit is listed with the recent invoices
