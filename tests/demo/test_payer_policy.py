"""The car's payment decision (``chargepoint_sim.payer.decide``): pure, so tested without any I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chargepoint_sim.payer import (
    Agreement,
    InvoiceOffer,
    Knowledge,
    Pay,
    PayerPolicy,
    Refuse,
    Wait,
    decide,
)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
HASH = "ab" * 32
AGREED = Agreement(price_msat_per_kwh=100_000, increment_wh=100, session_fee_msat=1_000)
POLICY = PayerPolicy(max_price_msat_per_kwh=200_000)


def offer(energy_wh: int = 100, price: int = 100_000, fee: int = 0, kind: str = "increment") -> InvoiceOffer:
    amount = energy_wh * price // 1000 + fee
    return InvoiceOffer(
        key="s/invoice/1",
        kind=kind,
        amount_msat=amount,
        energy_wh=energy_wh,
        price_msat_per_kwh=price,
        fee_msat=fee,
        payment_hash=HASH,
        decoded_amount_msat=amount,
        decoded_payment_hash=HASH,
        expires_at=NOW + timedelta(minutes=10),
    )


def known(
    delivered: int = 0, paid: int = 0, count: int = 0, fee_paid: bool = False, **kw: object
) -> Knowledge:
    return Knowledge(delivered_wh=delivered, paid_wh=paid, invoices_paid=count, fee_paid=fee_paid, **kw)  # type: ignore[arg-type]


def test_a_fair_first_invoice_is_paid_with_the_fee_limit_and_timeout() -> None:
    decision = decide(offer(fee=1_000), known(), AGREED, POLICY, NOW)
    assert decision == Pay(fee_limit_msat=2_000, timeout_s=25.0)  # max(3 % of 11 sat, 2 sat)
    big = decide(offer(energy_wh=200, price=100_000), known(), AGREED, PayerPolicy(), NOW)
    assert isinstance(big, Pay)  # 2 increments allowed for the first invoice


def test_fee_limit_is_three_percent_above_two_sat() -> None:
    assert PayerPolicy().fee_limit_msat(1_000_000) == 30_000
    assert PayerPolicy().fee_limit_msat(10_000) == 2_000


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"decoded_amount_msat": 10_001}, "amount_mismatch"),
        ({"decoded_payment_hash": "cd" * 32}, "hash_mismatch"),
        ({"expires_at": NOW}, "expired"),
        ({"amount_msat": 0, "decoded_amount_msat": 0}, "no_amount"),
        ({"amount_msat": 10_500, "decoded_amount_msat": 10_500}, "amount_above_rate"),
        ({"fee_msat": 5_000, "amount_msat": 15_000, "decoded_amount_msat": 15_000}, "fee_above_agreed"),
    ],
)
def test_an_invoice_that_is_not_what_it_says_is_refused(change: dict[str, object], reason: str) -> None:
    decision = decide(replace(offer(), **change), known(), AGREED, POLICY, NOW)  # type: ignore[arg-type]
    assert isinstance(decision, Refuse) and decision.reason == reason


def test_price_above_the_cars_maximum_or_the_agreement_is_refused() -> None:
    over_max = decide(offer(price=300_000), known(), replace(AGREED, price_msat_per_kwh=300_000), POLICY, NOW)
    assert isinstance(over_max, Refuse) and over_max.reason == "price_above_max"
    over_agreed = decide(offer(price=150_000), known(), AGREED, POLICY, NOW)
    assert isinstance(over_agreed, Refuse) and over_agreed.reason == "price_above_agreed"


def test_time_of_use_windows_count_in_the_agreed_price() -> None:
    tariff = {
        "price_msat_per_kwh": 100_000,
        "increment_wh": 100,
        "min_invoice_interval_s": 60,
        "session_fee_msat": 0,
        "schedule": {
            "zone": "UTC",
            "windows": [{"start": "18:00", "end": "22:00", "price_msat_per_kwh": 150_000}],
        },
    }
    agreement = Agreement.from_tariff(tariff)
    assert agreement.price_msat_per_kwh == 150_000 and agreement.increment_at(150_000) == 2_500
    assert isinstance(decide(offer(price=150_000), known(), agreement, POLICY, NOW), Pay)


def test_the_fee_is_agreed_once() -> None:
    second = decide(
        offer(fee=1_000), known(delivered=60, paid=100, count=1, fee_paid=True), AGREED, POLICY, NOW
    )
    assert isinstance(second, Refuse) and second.reason == "fee_above_agreed"
    # the fee was never paid: a later invoice may carry it again
    assert isinstance(
        decide(offer(fee=1_000), known(delivered=60, paid=100, count=1), AGREED, POLICY, NOW), Pay
    )


def test_larger_than_the_agreed_increment_is_refused() -> None:
    tight = PayerPolicy(tolerance_wh=0, tolerance_fraction=0)
    assert isinstance(decide(offer(energy_wh=200), known(), AGREED, tight, NOW), Pay)  # first: 2x
    first = decide(offer(energy_wh=201), known(), AGREED, tight, NOW)
    assert isinstance(first, Refuse) and first.reason == "larger_than_agreed"
    later = decide(offer(energy_wh=101), known(delivered=50, paid=100, count=1), AGREED, tight, NOW)
    assert isinstance(later, Refuse) and later.reason == "larger_than_agreed"
    # an increment may add the energy delivered and not yet paid (satwatt adds the deficit)
    catch_up = decide(offer(energy_wh=130), known(delivered=130, paid=100, count=1), AGREED, tight, NOW)
    assert isinstance(catch_up, Pay)
    # satwatt sizes increments to min_invoice_interval_s at high power
    fast = replace(AGREED, min_invoice_interval_s=60)
    dc = decide(
        offer(energy_wh=2_500), known(delivered=1_000, paid=1_100, count=1, power_w=150_000), fast, tight, NOW
    )
    assert isinstance(dc, Pay)


def test_the_car_waits_when_it_would_be_too_far_ahead() -> None:
    policy = PayerPolicy(max_ahead_wh=150, tolerance_wh=0, tolerance_fraction=0)
    ahead = decide(offer(energy_wh=100), known(delivered=50, paid=200, count=2), AGREED, policy, NOW)
    assert isinstance(ahead, Wait)
    assert isinstance(
        decide(offer(energy_wh=100), known(delivered=150, paid=200, count=2), AGREED, policy, NOW), Pay
    )


def test_final_invoice_only_for_energy_delivered_and_not_paid() -> None:
    tight = PayerPolicy(tolerance_wh=0, tolerance_fraction=0)
    state = known(delivered=170, paid=100, count=1, ended=True)
    assert isinstance(decide(offer(energy_wh=70, kind="final"), state, AGREED, tight, NOW), Pay)
    over = decide(offer(energy_wh=71, kind="final"), state, AGREED, tight, NOW)
    assert isinstance(over, Refuse) and over.reason == "final_above_delivered"
    late_increment = decide(offer(energy_wh=70), state, AGREED, tight, NOW)
    assert isinstance(late_increment, Refuse) and late_increment.reason == "session_ended"


@given(
    energy=st.integers(0, 5_000),
    price=st.integers(1, 2_000_000),
    fee=st.integers(0, 5_000),
    extra=st.integers(0, 10_000),
    delivered=st.integers(0, 50_000),
    paid=st.integers(0, 50_000),
    count=st.integers(0, 50),
    power=st.integers(0, 350_000),
    max_price=st.integers(1, 2_000_000),
)
def test_whatever_it_decides_it_never_pays_beyond_its_limits(
    energy: int,
    price: int,
    fee: int,
    extra: int,
    delivered: int,
    paid: int,
    count: int,
    power: int,
    max_price: int,
) -> None:
    """A paid invoice never breaks a limit of the policy, and the decision is deterministic."""
    policy = PayerPolicy(max_price_msat_per_kwh=max_price)
    agreement = Agreement(
        price_msat_per_kwh=1_000_000, increment_wh=100, min_invoice_interval_s=60, session_fee_msat=2_000
    )
    the_offer = offer(energy_wh=energy, price=price, fee=fee)
    the_offer = replace(
        the_offer,
        amount_msat=the_offer.amount_msat + extra,
        decoded_amount_msat=the_offer.amount_msat + extra,
    )
    state = known(delivered=delivered, paid=paid, count=count, power_w=power)
    decision = decide(the_offer, state, agreement, policy, NOW)
    assert decision == decide(the_offer, state, agreement, policy, NOW)
    if isinstance(decision, Pay | Wait):
        assert price <= min(max_price, agreement.price_msat_per_kwh)
        assert the_offer.amount_msat <= energy * price // 1000 + fee and fee <= 2_000
        factor = 2 if count == 0 else 1
        unpaid = max(0, delivered - paid)
        assert energy <= factor * agreement.increment_at(power) + unpaid + policy.tolerance(delivered)
    if isinstance(decision, Pay):
        assert decision.fee_limit_msat == max(-(-the_offer.amount_msat * 3 // 100), 2_000)
        assert paid + energy - delivered <= 2 * agreement.increment_at(power) + policy.tolerance(delivered)
