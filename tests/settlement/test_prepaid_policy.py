"""The prepaid (LNURL-pay) session in the pure policy: start on payment, drawdown, cut, top-up, refund."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from csms.settlement import policy
from csms.settlement.bill import compute_bill
from csms.settlement.session import (
    CloseOutcome,
    InvoiceKind,
    InvoiceStatus,
    SessionSettlement,
    open_prepaid_session,
    prepay_energy_wh,
    record_meter,
    record_payment,
    record_prepay_invoice,
    record_transaction_ended,
    record_transaction_started,
)
from csms.settlement.tariff import Tariff, prepay_bounds

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TARIFF = Tariff(price_msat_per_kwh=100_000, session_fee_msat=0, stop_after_s=60, invoice_expiry_s=600)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(state: SessionSettlement, seconds: float, tariff: Tariff = TARIFF) -> policy.Step:
    return policy.step(state, tariff, at(seconds))


def prepaid(amount_msat: int, tariff: Tariff = TARIFF) -> SessionSettlement:
    state = open_prepaid_session("S1", at(0))
    assert run(state, 0, tariff).decisions == ()  # nothing happens before the driver picks an amount
    return record_prepay_invoice(
        state, amount_msat, tariff.price_msat_per_kwh, tariff.session_fee_msat, at(0), at(600)
    )


def test_prepay_energy_rounds_down_and_the_rest_is_refundable() -> None:
    assert prepay_energy_wh(5_000_000, 0, 100_000) == 50_000
    assert prepay_energy_wh(5_000_099, 0, 100_000) == 50_000  # 99 msat below one Wh's price
    assert prepay_energy_wh(5_000_000, 1_000, 100_000) == 49_990


def test_prepaid_session_starts_on_payment_draws_down_and_refunds_the_rest() -> None:
    state = prepaid(5_000_000)  # 5,000 sat at 100 sat/kWh: 50 kWh
    (invoice,) = state.invoices
    assert invoice.kind is InvoiceKind.PREPAY and invoice.energy_wh == 50_000
    assert run(state, 1).decisions == ()  # waiting for the payment
    state = record_payment(state, invoice.key, at(2))
    step = run(state, 2)
    assert [type(d) for d in step.decisions] == [policy.RemoteStart]
    state = record_transaction_started(step.state, at(3))
    state = record_meter(state, 20_000, 11_000, at(60))
    step = run(state, 60)
    assert step.decisions == ()  # no invoice stream: the prepayment is drawn down
    state = record_transaction_ended(step.state, at(61), 20_000)
    step = run(state, 61)
    (close,) = step.decisions
    assert isinstance(close, policy.CloseSession) and close.outcome is CloseOutcome.SETTLED
    bill = close.bill
    assert bill.cost_msat == 2_000_000 and bill.refundable_msat == 3_000_000
    assert bill.paid_msat - bill.refundable_msat + bill.shortfall_msat == bill.cost_msat


def test_prepayment_used_up_suspends_then_a_top_up_resumes_and_silence_stops() -> None:
    state = prepaid(1_000_000)  # 10 kWh
    state = record_payment(state, state.invoices[0].key, at(1))
    state = run(state, 1).state
    state = record_transaction_started(state, at(2))
    state = record_meter(state, 9_000, 36_000, at(100))
    assert run(state, 100).decisions == ()
    # at 36 kW the last 1,000 Wh take 100 s: the projection cuts without waiting for a sample
    step = run(state, 200)
    (suspend,) = step.decisions
    assert isinstance(suspend, policy.Suspend) and suspend.reason is policy.SuspendReason.PREPAYMENT_USED
    state = step.state
    # a top-up (another LNURL-pay) resumes
    state = record_prepay_invoice(state, 1_000_000, 100_000, 0, at(210), at(810))
    top_up = state.invoices[-1]
    assert top_up.kind is InvoiceKind.PREPAY and top_up.fee_msat == 0 and top_up.status is InvoiceStatus.OPEN
    assert run(state, 211).decisions == ()
    state = record_payment(state, top_up.key, at(212))
    (resume,) = run(state, 212).decisions
    assert isinstance(resume, policy.Resume)
    state = run(state, 212).state
    state = record_meter(state, 20_000, 36_000, at(400))
    step = run(state, 400)
    assert [type(d) for d in step.decisions] == [policy.Suspend]
    step = run(step.state, 400 + TARIFF.stop_after_s)
    assert [type(d) for d in step.decisions] == [policy.StopTransaction]


def test_unpaid_prepayment_expires_and_the_session_never_starts() -> None:
    state = prepaid(2_000_000)
    step = run(state, 600)
    kinds = [type(d) for d in step.decisions]
    assert kinds == [policy.ExpireInvoice, policy.CloseSession]
    assert step.state.outcome is CloseOutcome.NOT_STARTED


def test_withdraw_before_start_refunds_all_with_the_fee() -> None:
    tariff = Tariff(price_msat_per_kwh=100_000, session_fee_msat=1_000)
    state = prepaid(2_000_000, tariff)
    state = record_payment(state, state.invoices[0].key, at(1))
    state = run(state, 1, tariff).state
    state = record_transaction_ended(state, at(5))
    bill = compute_bill(state, tariff, at(5))
    assert bill.cost_msat == 0 and bill.refundable_msat == 2_000_000
    assert run(state, 5, tariff).state.outcome is CloseOutcome.NOT_STARTED


def test_overdraw_after_the_cut_becomes_a_final_invoice() -> None:
    state = prepaid(1_000_000)
    state = record_payment(state, state.invoices[0].key, at(1))
    state = record_transaction_started(run(state, 1).state, at(2))
    state = record_transaction_ended(state, at(300), 10_005)  # 5 Wh drawn before the cut took effect
    step = run(state, 300)
    (final,) = step.decisions
    assert isinstance(final, policy.IssueFinalInvoice)
    assert final.energy_wh == 5 and final.amount_msat == 500 and final.price_msat_per_kwh == 100_000


def test_prepay_bounds_always_cover_the_fee_and_one_wh() -> None:
    assert prepay_bounds(TARIFF, at(0)) == (1_000_000, 100_000_000)
    odd = Tariff(session_fee_msat=5_000_000, prepay_min_msat=1, prepay_max_msat=1)
    assert prepay_bounds(odd, at(0)) == (5_000_100, 5_000_100)
