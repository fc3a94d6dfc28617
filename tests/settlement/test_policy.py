from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from csms.settlement.bill import SessionState, compute_bill, session_view
from csms.settlement.policy import (
    CancelInvoice,
    CloseSession,
    Decision,
    ExpireInvoice,
    IssueFinalInvoice,
    IssueInvoice,
    RemoteStart,
    Resume,
    StopTransaction,
    Suspend,
    SuspendReason,
    apply_decision,
    credit_exhausted_since,
    projected_delivered_wh,
    step,
)
from csms.settlement.session import (
    CloseOutcome,
    InvoiceStatus,
    SessionSettlement,
    UnknownInvoiceError,
    open_session,
    record_meter,
    record_payment,
    record_transaction_ended,
    record_transaction_started,
)
from csms.settlement.tariff import Tariff


def s(seconds: int) -> timedelta:
    return timedelta(seconds=seconds)


def run(
    state: SessionSettlement, tariff: Tariff, now: datetime
) -> tuple[SessionSettlement, tuple[Decision, ...]]:
    """One policy step, checking on the way that re-running it decides nothing new."""
    result = step(state, tariff, now)
    assert step(result.state, tariff, now).decisions == ()
    restored = SessionSettlement.from_dict(result.state.to_dict())
    assert restored == result.state
    assert step(restored, tariff, now).decisions == ()
    return result.state, result.decisions


def only(decisions: tuple[Decision, ...], kind: type) -> list:
    return [d for d in decisions if isinstance(d, kind)]


def charger_started(tariff: Tariff, t0: datetime) -> SessionSettlement:
    """An id-tag session: the transaction runs from t0; the first invoice is issued at once."""
    state = record_transaction_started(open_session("s", t0, remote_start=False), t0)
    state, decisions = run(state, tariff, t0)
    assert [type(d) for d in decisions] == [IssueInvoice]
    return state


def paid_and_running(tariff: Tariff, t0: datetime) -> SessionSettlement:
    state = charger_started(tariff, t0)
    return record_payment(state, "s/invoice/1", t0 + s(5))


# -- the first invoice ----------------------------------------------------------------------------------


def test_first_invoice_at_session_start_includes_the_fee(tariff: Tariff, t0: datetime) -> None:
    state, decisions = run(open_session("s", t0, remote_start=True), tariff, t0)
    (invoice,) = decisions
    assert isinstance(invoice, IssueInvoice)
    assert invoice.key == "s/invoice/1"
    assert invoice.energy_wh == 100
    assert invoice.price_msat_per_kwh == 100_000
    assert invoice.fee_msat == 5_000
    assert invoice.amount_msat == 10_000 + 5_000
    assert invoice.expires_at == t0 + s(600)
    assert session_view(state, tariff, t0).state is SessionState.AWAITING_PAYMENT


def test_remote_start_only_after_payment_and_only_once(tariff: Tariff, t0: datetime) -> None:
    state, _ = run(open_session("s", t0, remote_start=True), tariff, t0)
    state, decisions = run(state, tariff, t0 + s(20))
    assert decisions == ()
    state = record_payment(state, "s/invoice/1", t0 + s(25))
    state, decisions = run(state, tariff, t0 + s(25))
    assert decisions == (RemoteStart(key="s/start", at=t0 + s(25)),)
    state, decisions = run(state, tariff, t0 + s(40))
    assert decisions == ()
    assert session_view(state, tariff, t0 + s(40)).state is SessionState.CHARGING


def test_unpaid_first_invoice_of_a_remote_start_closes_the_session(tariff: Tariff, t0: datetime) -> None:
    state, _ = run(open_session("s", t0, remote_start=True), tariff, t0)
    state, decisions = run(state, tariff, t0 + s(600))
    assert [type(d) for d in decisions] == [ExpireInvoice, CloseSession]
    close = decisions[1]
    assert isinstance(close, CloseSession) and close.outcome is CloseOutcome.NOT_STARTED
    assert close.bill.cost_msat == 0
    assert state.invoices[0].status is InvoiceStatus.EXPIRED


def test_remote_start_that_never_starts_refunds_everything_including_the_fee(
    tariff: Tariff, t0: datetime
) -> None:
    state, _ = run(open_session("s", t0, remote_start=True), tariff, t0)
    state = record_payment(state, "s/invoice/1", t0 + s(5))
    state, _ = run(state, tariff, t0 + s(5))
    state = record_transaction_ended(state, t0 + s(90))  # the charger rejected the remote start
    state, decisions = run(state, tariff, t0 + s(90))
    (close,) = decisions
    assert isinstance(close, CloseSession) and close.outcome is CloseOutcome.NOT_STARTED
    assert close.bill.cost_msat == 0
    assert close.bill.refundable_msat == 15_000
    assert close.bill.refunds[0].fee_msat == 5_000 and close.bill.refunds[0].energy_wh == 100


# -- the next invoice -----------------------------------------------------------------------------------


def test_next_invoice_when_credit_falls_below_half_an_increment(tariff: Tariff, t0: datetime) -> None:
    state = paid_and_running(tariff, t0)
    state = record_meter(state, 50, 3_000, t0 + s(60))  # credit 50 = half: not yet
    state, decisions = run(state, tariff, t0 + s(60))
    assert decisions == ()
    state = record_meter(state, 51, 3_000, t0 + s(61))  # credit 49 < 50
    state, decisions = run(state, tariff, t0 + s(61))
    (invoice,) = decisions
    assert isinstance(invoice, IssueInvoice)
    assert (invoice.key, invoice.energy_wh, invoice.fee_msat, invoice.amount_msat) == (
        "s/invoice/2",
        100,
        0,
        10_000,
    )


def test_only_one_invoice_outstanding(tariff: Tariff, t0: datetime) -> None:
    state = paid_and_running(tariff, t0)
    state = record_meter(state, 60, 3_000, t0 + s(60))
    state, decisions = run(state, tariff, t0 + s(60))
    assert len(only(decisions, IssueInvoice)) == 1
    state = record_meter(state, 90, 3_000, t0 + s(70))
    state, decisions = run(state, tariff, t0 + s(70))
    assert only(decisions, IssueInvoice) == []


def test_increment_follows_power(tariff: Tariff, t0: datetime) -> None:
    state = paid_and_running(tariff, t0)
    state = record_meter(state, 80, 150_000, t0 + s(10))
    state, decisions = run(state, tariff, t0 + s(10))
    (invoice,) = only(decisions, IssueInvoice)
    assert invoice.energy_wh == 2_500
    assert invoice.amount_msat == 250_000


def test_fee_is_carried_until_paid(tariff: Tariff, t0: datetime) -> None:
    state = charger_started(tariff, t0)
    state, decisions = run(state, tariff, t0 + s(600))
    expire, replacement = only(decisions, ExpireInvoice)[0], only(decisions, IssueInvoice)[0]
    assert expire.invoice_key == "s/invoice/1"
    assert replacement.key == "s/invoice/2"
    assert replacement.fee_msat == 5_000
    state = record_payment(state, "s/invoice/2", t0 + s(601))
    state = record_meter(state, 60, 1_000, t0 + s(700))
    state, decisions = run(state, tariff, t0 + s(700))
    (third,) = only(decisions, IssueInvoice)
    assert third.fee_msat == 0


def test_expired_invoice_is_replaced_at_the_current_price(night_tariff: Tariff) -> None:
    start = datetime.fromisoformat("2025-01-15T21:55:00+01:00")  # 5 min before the night window
    state = record_transaction_started(open_session("s", start, remote_start=False), start)
    state, decisions = run(state, night_tariff, start)
    assert only(decisions, IssueInvoice)[0].price_msat_per_kwh == 100_000
    state, decisions = run(state, night_tariff, start + s(600))
    assert only(decisions, ExpireInvoice)[0].invoice_key == "s/invoice/1"
    assert only(decisions, IssueInvoice)[0].price_msat_per_kwh == 50_000


def test_invoice_covers_a_deficit_so_one_payment_restores_credit(tariff: Tariff, t0: datetime) -> None:
    state = charger_started(tariff, t0)
    state = record_meter(state, 200, 3_000, t0 + s(10))  # charger drew 200 Wh before the first payment
    state, decisions = run(state, tariff, t0 + s(10))
    assert isinstance(decisions[0], Suspend)
    state = record_payment(state, "s/invoice/1", t0 + s(12))
    state, decisions = run(state, tariff, t0 + s(12))
    (invoice,) = only(decisions, IssueInvoice)
    assert invoice.energy_wh == 100 + 100  # one increment + the 100 Wh still unpaid
    state = record_payment(state, invoice.key, t0 + s(15))
    state, decisions = run(state, tariff, t0 + s(15))
    assert only(decisions, Resume) and state.credit_wh == 100


# -- suspend, resume, stop ------------------------------------------------------------------------------


def test_allowance_before_the_first_payment(tariff: Tariff, t0: datetime) -> None:
    state = charger_started(tariff, t0)
    state = record_meter(state, 50, 3_000, t0 + s(5))  # delivered == paid + allowance
    state, decisions = run(state, tariff, t0 + s(5))
    assert decisions == ()
    state = record_meter(state, 51, 3_000, t0 + s(6))
    state, decisions = run(state, tariff, t0 + s(6))
    assert decisions == (Suspend(key="s/suspend/1", at=t0 + s(6), reason=SuspendReason.ALLOWANCE_EXCEEDED),)
    assert session_view(state, tariff, t0 + s(6)).state is SessionState.SUSPENDED


def test_grace_counts_from_when_the_credit_ran_out(tariff: Tariff, t0: datetime) -> None:
    state = charger_started(tariff, t0)  # nothing paid: credit is 0 from the start
    state, decisions = run(state, tariff, t0 + s(29))
    assert decisions == ()
    state, decisions = run(state, tariff, t0 + s(30))
    assert decisions == (Suspend(key="s/suspend/1", at=t0 + s(30), reason=SuspendReason.PAYMENT_OVERDUE),)


def test_credit_exhaustion_is_interpolated_between_samples(tariff: Tariff, t0: datetime) -> None:
    state = paid_and_running(tariff, t0)
    state = record_meter(state, 80, 6_000, t0 + s(60))
    state, decisions = run(state, tariff, t0 + s(60))
    assert only(decisions, IssueInvoice)
    state = record_meter(state, 120, 2_400, t0 + s(120))  # credit 20 -> -20: ran out half way, at 90 s
    assert state.credit_exhausted_at == t0 + s(90)
    assert step(state, tariff, t0 + s(119)).decisions == ()  # 29 s after it ran out
    state, decisions = run(state, tariff, t0 + s(120))
    assert [d.reason for d in only(decisions, Suspend)] == [SuspendReason.PAYMENT_OVERDUE]


def test_payment_in_time_avoids_suspension(tariff: Tariff, t0: datetime) -> None:
    state = paid_and_running(tariff, t0)
    state = record_meter(state, 100, 6_000, t0 + s(60))  # credit exactly 0
    state, decisions = run(state, tariff, t0 + s(60))
    (invoice,) = only(decisions, IssueInvoice)
    state = record_payment(state, invoice.key, t0 + s(80))
    assert state.credit_exhausted_at is None
    state = record_meter(state, 120, 6_000, t0 + s(95))
    state, decisions = run(state, tariff, t0 + s(95))
    assert decisions == ()


def test_resume_when_payment_restores_credit_then_a_second_suspension(tariff: Tariff, t0: datetime) -> None:
    state = charger_started(tariff, t0)
    state, decisions = run(state, tariff, t0 + s(30))
    assert only(decisions, Suspend)
    state = record_payment(state, "s/invoice/1", t0 + s(40))
    state, decisions = run(state, tariff, t0 + s(41))
    assert decisions == (Resume(key="s/resume/1", at=t0 + s(41)),)
    # a replayed Suspend of the first suspension must not cut the power again
    assert apply_decision(state, Suspend("s/suspend/1", t0 + s(30), SuspendReason.PAYMENT_OVERDUE)) == state
    state = record_meter(state, 151, 5_000, t0 + s(100))
    state, decisions = run(state, tariff, t0 + s(100))
    assert [d.key for d in only(decisions, Suspend)] == ["s/suspend/2"]


def test_a_late_payment_leaving_a_small_deficit_resumes_and_the_deficit_is_billed(
    tariff: Tariff, t0: datetime
) -> None:
    """Energy drawn while the cut was on its way leaves credit below zero after the payment: still within
    the allowance, the payer is resumed, the grace period restarts, and the next invoice covers it."""
    state = paid_and_running(tariff, t0)  # 100 Wh paid
    state = record_meter(state, 60, 0, t0 + s(10))  # credit 40 < 50: invoice 2 is issued
    state, decisions = run(state, tariff, t0 + s(10))
    assert [d.key for d in only(decisions, IssueInvoice)] == ["s/invoice/2"]
    state = record_meter(state, 151, 0, t0 + s(20))  # beyond paid + allowance: cut
    state, decisions = run(state, tariff, t0 + s(20))
    assert only(decisions, Suspend)
    state = record_meter(state, 210, 0, t0 + s(25))  # drawn while the cut was on its way
    state = record_payment(state, "s/invoice/2", t0 + s(30))  # 200 Wh paid, 210 delivered
    assert state.credit_wh == -10
    state, decisions = run(state, tariff, t0 + s(31))
    assert [type(d) for d in decisions] == [Resume, IssueInvoice]
    (invoice,) = only(decisions, IssueInvoice)
    assert invoice.energy_wh == 110  # the increment plus the 10 Wh already drawn
    # the payer has a fresh grace period for it, counted from its payment
    state, decisions = run(state, tariff, t0 + s(59))
    assert decisions == ()
    state, decisions = run(state, tariff, t0 + s(60))
    assert [d.reason for d in only(decisions, Suspend)] == [SuspendReason.PAYMENT_OVERDUE]


def test_suspended_too_long_stops_once_and_never_resumes(tariff: Tariff, t0: datetime) -> None:
    state = charger_started(tariff, t0)
    state, _ = run(state, tariff, t0 + s(30))  # suspended at 30
    state, decisions = run(state, tariff, t0 + s(329))
    assert decisions == ()
    state, decisions = run(state, tariff, t0 + s(330))
    assert [type(d) for d in decisions] == [StopTransaction]
    assert decisions[0].key == "s/stop"
    state = record_payment(state, "s/invoice/1", t0 + s(340))  # too late to resume
    state, decisions = run(state, tariff, t0 + s(340))
    assert decisions == ()


def test_payment_seen_after_stop_after_still_resumes_if_no_stop_was_sent(
    tariff: Tariff, t0: datetime
) -> None:
    state = charger_started(tariff, t0)
    state, _ = run(state, tariff, t0 + s(30))
    state = record_payment(state, "s/invoice/1", t0 + s(320))
    state, decisions = run(state, tariff, t0 + s(400))  # the timer ran late
    assert [type(d) for d in decisions] == [Resume]


def test_a_charger_that_stops_reporting_is_still_cut(tariff: Tariff, t0: datetime) -> None:
    state = paid_and_running(tariff, t0)
    state = record_meter(state, 10, 7_200, t0 + s(10))  # 2 Wh/s, credit 90 Wh
    state, decisions = run(state, tariff, t0 + s(10))
    assert decisions == ()
    # silence: projected 10 + 2/s; the next invoice is due once projected credit < 50 Wh
    assert projected_delivered_wh(state, t0 + s(31)) == 52
    state, decisions = run(state, tariff, t0 + s(31))
    assert [type(d) for d in decisions] == [IssueInvoice]
    # credit projected to run out at 10 + 45 s = 55 s; allowance (50 Wh) used up at 80 s
    assert credit_exhausted_since(state, t0 + s(60)) == t0 + s(55)
    state, decisions = run(state, tariff, t0 + s(80))
    assert decisions == ()
    state, decisions = run(state, tariff, t0 + s(81))
    assert [d.reason for d in only(decisions, Suspend)] == [SuspendReason.ALLOWANCE_EXCEEDED]
    # while suspended the projection stops growing
    assert projected_delivered_wh(state, t0 + s(500)) == projected_delivered_wh(state, t0 + s(81))


def test_the_projection_counts_fractions_of_a_second(tariff: Tariff, t0: datetime) -> None:
    """Checked every tick (100 ms), the projection must grow every tick, not once a whole second has
    passed since the last sample: at 36 kW (10 Wh/s) a quiet second is 10 Wh past the allowance."""
    state = paid_and_running(tariff, t0)  # 100 Wh paid, allowance 50 Wh
    state = record_meter(state, 149, 36_000, t0 + s(10))
    state, decisions = run(state, tariff, t0 + s(10))
    assert only(decisions, Suspend) == []
    assert projected_delivered_wh(state, t0 + s(10) + timedelta(milliseconds=1)) == 150  # rounded up
    assert projected_delivered_wh(state, t0 + s(10) + timedelta(milliseconds=300)) == 152
    state, decisions = run(state, tariff, t0 + s(10) + timedelta(milliseconds=100))  # 150: at the edge
    assert only(decisions, Suspend) == []
    state, decisions = run(state, tariff, t0 + s(10) + timedelta(milliseconds=200))  # 151: one tick on
    assert [d.reason for d in only(decisions, Suspend)] == [SuspendReason.ALLOWANCE_EXCEEDED]


def test_meter_samples_are_monotonic_and_bounded_by_the_transaction(tariff: Tariff, t0: datetime) -> None:
    state = paid_and_running(tariff, t0)
    state = record_meter(state, 40, 3_000, t0 + s(30))
    assert record_meter(state, 30, 3_000, t0 + s(40)).delivered_wh == 40
    late = record_meter(state, 45, 9_000, t0 + s(20))  # older than the last sample: energy only
    assert (late.delivered_wh, late.power_w, late.metered_at) == (45, 3_000, t0 + s(30))
    before_start = open_session("x", t0, remote_start=True)
    assert record_meter(before_start, 10, 1_000, t0) == before_start


def test_payments_are_credited_once(tariff: Tariff, t0: datetime) -> None:
    state = charger_started(tariff, t0)
    once = record_payment(state, "s/invoice/1", t0 + s(3))
    assert record_payment(once, "s/invoice/1", t0 + s(9)) == once
    with pytest.raises(UnknownInvoiceError):
        record_payment(state, "s/invoice/99", t0)


def test_naive_now_is_rejected(tariff: Tariff, t0: datetime) -> None:
    with pytest.raises(ValueError):
        step(open_session("s", t0, remote_start=True), tariff, t0.replace(tzinfo=None))


# -- the end --------------------------------------------------------------------------------------------


def test_end_with_surplus_closes_settled_with_refundable_credit(tariff: Tariff, t0: datetime) -> None:
    state = paid_and_running(tariff, t0)
    state = record_meter(state, 60, 3_000, t0 + s(60))
    state, decisions = run(state, tariff, t0 + s(60))
    (second,) = only(decisions, IssueInvoice)
    state = record_payment(state, second.key, t0 + s(65))
    state = record_transaction_ended(state, t0 + s(90), delivered_wh=130)
    state, decisions = run(state, tariff, t0 + s(90))
    (close,) = decisions
    assert isinstance(close, CloseSession) and close.outcome is CloseOutcome.SETTLED
    bill = close.bill
    assert bill.cost_msat == 13_000 + 5_000
    assert bill.paid_msat == 15_000 + 10_000
    assert bill.refundable_msat == 7_000
    assert [(r.invoice_key, r.energy_wh, r.energy_msat) for r in bill.refunds] == [("s/invoice/2", 70, 7_000)]
    view = session_view(state, tariff, t0 + s(90))
    assert (view.state, view.cost_msat, view.refundable_msat) == (SessionState.ENDED, 18_000, 7_000)


def test_end_with_shortfall_gets_a_final_invoice(tariff: Tariff, t0: datetime) -> None:
    state = paid_and_running(tariff, t0)
    state = record_meter(state, 60, 3_000, t0 + s(60))
    state, decisions = run(state, tariff, t0 + s(60))  # invoice 2 issued, never paid
    state = record_transaction_ended(state, t0 + s(100), delivered_wh=140)
    state, decisions = run(state, tariff, t0 + s(100))
    assert [type(d) for d in decisions] == [CancelInvoice, IssueFinalInvoice]
    final = decisions[1]
    assert isinstance(final, IssueFinalInvoice)
    assert (final.key, final.energy_wh, final.fee_msat, final.amount_msat) == ("s/invoice/3", 40, 0, 4_000)
    assert session_view(state, tariff, t0 + s(100)).state is SessionState.AWAITING_PAYMENT_FINAL
    paid = record_payment(state, final.key, t0 + s(130))
    paid, decisions = run(paid, tariff, t0 + s(130))
    (close,) = decisions
    assert isinstance(close, CloseSession) and close.outcome is CloseOutcome.SETTLED
    assert close.bill.cost_msat == close.bill.paid_msat == 5_000 + 14_000
    # unpaid: the final invoice expires and the shortfall becomes debt
    unpaid, decisions = run(state, tariff, t0 + s(700))
    assert [type(d) for d in decisions] == [ExpireInvoice, CloseSession]
    close = decisions[1]
    assert isinstance(close, CloseSession) and close.outcome is CloseOutcome.UNPAID_DEBT
    assert close.bill.shortfall_msat == 4_000
    view = session_view(unpaid, tariff, t0 + s(700))
    assert (view.state, view.unpaid_msat, view.outcome) == (SessionState.ENDED, 4_000, "unpaid_debt")


def test_final_invoice_carries_an_unpaid_fee(tariff: Tariff, t0: datetime) -> None:
    state = charger_started(tariff, t0)
    state = record_meter(state, 30, 3_000, t0 + s(20))
    state = record_transaction_ended(state, t0 + s(25), delivered_wh=30)
    state, decisions = run(state, tariff, t0 + s(25))
    final = only(decisions, IssueFinalInvoice)[0]
    assert (final.energy_wh, final.fee_msat, final.amount_msat) == (30, 5_000, 3_000 + 5_000)


def test_late_increment_payment_covering_the_final_invoice_cancels_it(tariff: Tariff, t0: datetime) -> None:
    state = paid_and_running(tariff, t0)
    state = record_meter(state, 60, 3_000, t0 + s(60))
    state, _ = run(state, tariff, t0 + s(60))
    state = record_transaction_ended(state, t0 + s(100), delivered_wh=140)
    state, _ = run(state, tariff, t0 + s(100))  # invoice 2 canceled, final invoice 3 issued
    state = record_payment(state, "s/invoice/2", t0 + s(101))  # the payment raced the cancel
    state, decisions = run(state, tariff, t0 + s(110))
    assert [type(d) for d in decisions] == [CancelInvoice, CloseSession]
    close = decisions[1]
    assert isinstance(close, CloseSession) and close.outcome is CloseOutcome.SETTLED
    assert close.bill.refundable_msat == 6_000  # 60 Wh of invoice 2 unused


def test_expired_invoice_paid_late_is_credited_once_and_refundable(tariff: Tariff, t0: datetime) -> None:
    state = charger_started(tariff, t0)
    state, _ = run(state, tariff, t0 + s(600))  # invoice 1 expired, invoice 2 (with fee) issued
    state = record_payment(state, "s/invoice/2", t0 + s(601))
    state = record_payment(state, "s/invoice/1", t0 + s(602))  # raced the expiry at the node
    state = record_payment(state, "s/invoice/1", t0 + s(603))
    assert state.paid_wh == 200
    state = record_transaction_ended(state, t0 + s(700), delivered_wh=150)
    state, decisions = run(state, tariff, t0 + s(700))
    close = only(decisions, CloseSession)[0]
    bill = close.bill
    assert bill.cost_msat == 15_000 + 5_000
    assert bill.paid_msat == 30_000
    # FIFO by invoice order: invoice 1 fully used (its fee counts), invoice 2 half used, its fee refunded
    assert [(r.invoice_key, r.energy_wh, r.energy_msat, r.fee_msat) for r in bill.refunds] == [
        ("s/invoice/2", 50, 5_000, 5_000)
    ]
    assert bill.paid_msat - bill.refundable_msat == bill.cost_msat


def test_tranches_keep_the_price_they_were_sold_at(night_tariff: Tariff) -> None:
    start = datetime.fromisoformat("2025-01-15T21:59:00+01:00")
    state = record_transaction_started(open_session("s", start, remote_start=False), start)
    state, _ = run(state, night_tariff, start)  # 100 Wh at 100 sat/kWh
    state = record_payment(state, "s/invoice/1", start + s(5))
    state = record_meter(state, 60, 6_000, start + s(61))  # now 22:00: night price
    state, decisions = run(state, night_tariff, start + s(61))
    (second,) = only(decisions, IssueInvoice)
    assert (second.energy_wh, second.price_msat_per_kwh) == (100, 50_000)
    state = record_payment(state, second.key, start + s(70))
    state = record_transaction_ended(state, start + s(120), delivered_wh=160)
    bill = compute_bill(state, night_tariff, start + s(120))
    assert [(line.invoice_key, line.energy_wh, line.amount_msat) for line in bill.lines] == [
        ("s/invoice/1", 100, 10_000),
        ("s/invoice/2", 60, 3_000),
    ]
    assert bill.cost_msat == 13_000


def test_closed_session_decides_nothing(tariff: Tariff, t0: datetime) -> None:
    state = paid_and_running(tariff, t0)
    state = record_transaction_ended(state, t0 + s(30), delivered_wh=20)
    state, decisions = run(state, tariff, t0 + s(30))
    assert isinstance(decisions[-1], CloseSession)
    assert step(state, tariff, t0 + s(5_000)).decisions == ()
    assert record_transaction_ended(state, t0 + s(40), delivered_wh=999) == state


def test_late_payment_shrinking_the_shortfall_reissues_a_smaller_final_invoice(
    tariff: Tariff, t0: datetime
) -> None:
    state = paid_and_running(tariff, t0)
    state = record_meter(state, 60, 3_000, t0 + s(60))
    state, _ = run(state, tariff, t0 + s(60))  # invoice 2 (100 Wh) issued
    state = record_transaction_ended(state, t0 + s(100), delivered_wh=250)
    state, decisions = run(state, tariff, t0 + s(100))
    final = only(decisions, IssueFinalInvoice)[0]
    assert (final.key, final.energy_wh, final.amount_msat) == ("s/invoice/3", 150, 15_000)
    state = record_payment(state, "s/invoice/2", t0 + s(101))  # raced the cancel: covers 100 of the 150 Wh
    state, decisions = run(state, tariff, t0 + s(110))
    assert [type(d) for d in decisions] == [CancelInvoice, IssueFinalInvoice]
    smaller = decisions[1]
    assert isinstance(smaller, IssueFinalInvoice)
    assert (smaller.key, smaller.energy_wh, smaller.amount_msat) == ("s/invoice/4", 50, 5_000)
    state = record_payment(state, smaller.key, t0 + s(120))
    state, decisions = run(state, tariff, t0 + s(120))
    close = only(decisions, CloseSession)[0]
    assert close.outcome is CloseOutcome.SETTLED
    assert close.bill.cost_msat == close.bill.paid_msat == 5_000 + 25_000
    assert close.bill.refundable_msat == 0


def test_view_before_during_and_after(tariff: Tariff, t0: datetime) -> None:
    state, _ = run(open_session("s", t0, remote_start=True), tariff, t0)
    view = session_view(state, tariff, t0)
    assert (view.state, view.cost_msat, view.billed_msat, view.paid_msat) == (
        SessionState.AWAITING_PAYMENT,
        0,
        15_000,
        0,
    )
    state = record_payment(state, "s/invoice/1", t0 + s(5))
    state, _ = run(state, tariff, t0 + s(5))
    state = record_transaction_started(state, t0 + s(20))
    state = record_meter(state, 40, 7_000, t0 + s(40))
    view = session_view(state, tariff, t0 + s(40))
    assert (view.state, view.delivered_wh, view.cost_msat, view.credit_wh, view.refundable_msat) == (
        SessionState.CHARGING,
        40,
        4_000 + 5_000,
        60,
        0,
    )
