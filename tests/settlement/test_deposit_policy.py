"""The hold-invoice deposit in the pure policy: power on when the HTLC is held, a final invoice at the end,
the deposit canceled once it is paid, settled when its CLTV deadline nears (never on the invoice expiry)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from csms.settlement import policy
from csms.settlement.bill import SessionState, session_state
from csms.settlement.session import (
    CloseOutcome,
    InvoiceKind,
    InvoiceStatus,
    SessionSettlement,
    open_prepaid_session,
    record_deposit_accepted,
    record_deposit_deadline,
    record_deposit_invoice,
    record_meter,
    record_payment,
    record_transaction_ended,
    record_transaction_started,
)
from csms.settlement.tariff import Tariff

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TARIFF = Tariff(price_msat_per_kwh=100_000, invoice_expiry_s=600, stop_after_s=60)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(state: SessionSettlement, seconds: float) -> policy.Step:
    return policy.step(state, TARIFF, at(seconds))


def charged(used_wh: int) -> SessionSettlement:
    """A deposit session (25,000 sat held) that charged ``used_wh`` and ended."""
    state = record_deposit_invoice(open_prepaid_session("D", at(0)), 25_000_000, 100_000, 0, at(0), at(600))
    (deposit,) = state.invoices
    assert deposit.kind is InvoiceKind.DEPOSIT and deposit.energy_wh == 250_000
    assert run(state, 1).decisions == ()
    assert session_state(state) is SessionState.AWAITING_PAYMENT
    state = record_deposit_accepted(state, at(2), expiry_height=1080)
    assert session_state(state) is SessionState.CHARGING
    step = run(state, 2)
    assert [type(d) for d in step.decisions] == [policy.RemoteStart]  # power on when the HTLC is held
    state = record_transaction_started(step.state, at(3))
    state = record_meter(state, used_wh, 11_000, at(700))
    step = run(state, 700)  # past the invoice's expiry: a held deposit is not expired
    assert step.decisions == ()
    return record_transaction_ended(step.state, at(701), used_wh)


def test_the_deposit_is_canceled_once_the_final_invoice_is_paid() -> None:
    step = run(charged(20_000), 701)
    (final,) = step.decisions
    assert isinstance(final, policy.IssueFinalInvoice) and final.amount_msat == 2_000_000
    state = record_payment(step.state, final.key, at(710))
    step = run(state, 710)
    cancel, close = step.decisions
    assert isinstance(cancel, policy.CancelDeposit)
    assert isinstance(close, policy.CloseSession) and close.outcome is CloseOutcome.SETTLED
    assert step.state.deposit is not None and step.state.deposit.status is InvoiceStatus.CANCELED
    bill = close.bill
    assert bill.cost_msat == bill.paid_msat == 2_000_000 and bill.refundable_msat == 0


def test_the_deposit_is_settled_when_its_deadline_nears_and_the_rest_is_refundable() -> None:
    step = run(charged(20_000), 701)
    (final,) = step.decisions
    assert isinstance(final, policy.IssueFinalInvoice)
    state = step.state
    step = run(state, 701 + 600)  # the final invoice expires: the session waits for the deadline
    assert [type(d) for d in step.decisions] == [policy.ExpireInvoice]
    state = record_deposit_deadline(step.state, at(2000))
    step = run(state, 2000)
    (settle,) = step.decisions
    assert isinstance(settle, policy.SettleDeposit)
    assert run(step.state, 2001).decisions == ()  # until the settlement is recorded
    state = record_payment(step.state, settle.invoice_key, at(2002))
    step = run(state, 2002)
    (close,) = step.decisions
    assert isinstance(close, policy.CloseSession) and close.outcome is CloseOutcome.SETTLED
    bill = close.bill
    assert (bill.cost_msat, bill.paid_msat, bill.refundable_msat) == (2_000_000, 25_000_000, 23_000_000)


def test_an_unaccepted_deposit_expires_and_the_session_never_starts() -> None:
    state = record_deposit_invoice(open_prepaid_session("D", at(0)), 25_000_000, 100_000, 0, at(0), at(600))
    step = run(state, 600)
    assert [type(d) for d in step.decisions] == [policy.ExpireInvoice, policy.CloseSession]
    assert step.state.outcome is CloseOutcome.NOT_STARTED


def test_power_is_cut_when_the_energy_reaches_the_deposit() -> None:
    state = record_deposit_invoice(open_prepaid_session("D", at(0)), 1_000_000, 100_000, 0, at(0), at(600))
    state = record_deposit_accepted(state, at(1), 1080)
    state = record_transaction_started(run(state, 1).state, at(2))
    state = record_meter(state, 10_000, 11_000, at(100))
    (suspend,) = run(state, 100).decisions
    assert isinstance(suspend, policy.Suspend)
