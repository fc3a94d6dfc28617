"""The invoice-stream policy: a pure function of (settlement state, tariff, now) to the decisions to act on.

How the caller uses it (on every meter sample, every payment, the transaction's end, and on a timer)::

    state = record_meter(state, delivered_wh, power_w, now)        # or record_payment / ..._ended
    result = step(state, tariff, now)
    # ONE database transaction: persist result.state (it already contains every decision's effect:
    # the new invoice rows, suspended_since, ...) and result.decisions as outbox rows (unique on .key).
    # Only then act on each decision (create the invoice at the node, send SetChargingProfile, ...)
    # and mark its outbox row done. After a restart, redo the outbox rows not yet done.

Idempotency: ``step`` applies each decision to the state it returns, so ``step(result.state, tariff,
now)`` decides nothing new; a crash before the persist re-runs from the old state and yields decisions
with the same keys. Keys are deterministic: ``{session}/invoice/{seq}`` (seq = 1 + invoices so far, so
a need is keyed by the invoice that answers it), ``{session}/expire/{seq}``, ``{session}/cancel/{seq}``,
``{session}/suspend/{n}`` and ``{session}/resume/{n}`` (n = suspension number), ``{session}/start``,
``{session}/stop``, ``{session}/close``. ``apply_decision`` ignores a decision whose effect is already
in the state, so replaying an outbox row against reloaded state is harmless.

Rules (credit = Wh paid - Wh delivered; for the power-cut and invoicing rules, delivered energy is
projected at the last reported power since the last sample, so a charger that stops reporting is still
cut; billing only ever uses metered Wh):

* At session start, the first invoice: one increment plus the session fee. While no paid invoice has
  carried the fee, the next increment invoice carries it again.
* When credit < half an increment and no increment invoice is open, issue the next one for
  ``increment_wh_for(tariff, power)`` Wh plus any deficit (so one payment brings credit back above zero),
  at ``price_at(tariff, now)``. An open invoice past its ``expires_at`` is expired (and so replaced).
* Suspend when delivered > paid + ``allowance_wh``, or when credit has been exhausted for ``grace_s``
  (there is then always an unpaid invoice). Resume when credit is back above zero. Suspended for
  ``stop_after_s`` -> stop the transaction (no resume, no new invoice after that).
* Before a remote-started transaction starts: once an invoice is paid, ``RemoteStart``; if the first
  invoice expires unpaid, the session closes as ``not_started``.
* After the transaction ended: open increment invoices are canceled; a shortfall gets a final invoice
  (not replaced when it expires; canceled and reissued smaller only if a late increment payment shrinks
  the shortfall); the session closes ``settled`` when nothing is owed, ``unpaid_debt`` when the final
  invoice expires unpaid.
* Prepaid sessions (``state.prepaid``, LNURL-pay): the driver's prepayments are recorded as facts
  (``record_prepay_invoice``); no increment invoice is issued; the power is cut (``prepayment_used``) as
  soon as the projected energy reaches the paid Wh, resumed by a paid top-up, and the transaction is
  stopped after ``stop_after_s`` suspended. The rest (final invoice, close) is as above.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from csms.settlement.bill import Bill, compute_bill
from csms.settlement.rounding import energy_wh_over, msat_for_energy, seconds_to_deliver, whole_seconds
from csms.settlement.session import (
    CloseOutcome,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    SessionSettlement,
)
from csms.settlement.tariff import Tariff, increment_wh_for, price_at, require_aware


class SuspendReason(StrEnum):
    ALLOWANCE_EXCEEDED = "allowance_exceeded"  # delivered > paid + allowance_wh
    PAYMENT_OVERDUE = "payment_overdue"  # credit exhausted for grace_s with the invoice unpaid
    PREPAYMENT_USED = "prepayment_used"  # a prepaid session drew all it prepaid


class StopReason(StrEnum):
    SUSPENDED_TOO_LONG = "suspended_too_long"


# -- decisions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssueInvoice:
    """Create this increment invoice at the node (amount_msat, expiry = expires_at) for the payer."""

    key: str
    seq: int
    at: datetime
    energy_wh: int
    price_msat_per_kwh: int
    fee_msat: int
    amount_msat: int
    expires_at: datetime


@dataclass(frozen=True)
class IssueFinalInvoice:
    """Create the final invoice for the shortfall (unprepaid Wh, plus the fee if it was never paid)."""

    key: str
    seq: int
    at: datetime
    energy_wh: int
    price_msat_per_kwh: int
    fee_msat: int
    amount_msat: int
    expires_at: datetime


@dataclass(frozen=True)
class ExpireInvoice:
    """The invoice passed its expiry unpaid: cancel it at the node; a replacement follows if needed."""

    key: str
    invoice_key: str
    at: datetime


@dataclass(frozen=True)
class CancelInvoice:
    """The invoice is no longer needed (transaction ended): cancel it at the node."""

    key: str
    invoice_key: str
    at: datetime


@dataclass(frozen=True)
class RemoteStart:
    """The first invoice of a remote-start session is paid: send the remote start."""

    key: str
    at: datetime


@dataclass(frozen=True)
class Suspend:
    """Cut the power: charging profile with limit 0 on the connector (or a remote stop if rejected)."""

    key: str
    at: datetime
    reason: SuspendReason


@dataclass(frozen=True)
class Resume:
    """Payment brought credit back: clear the limit-0 profile."""

    key: str
    at: datetime


@dataclass(frozen=True)
class StopTransaction:
    """Suspended too long: RemoteStopTransaction / RequestStopTransaction."""

    key: str
    at: datetime
    reason: StopReason


@dataclass(frozen=True)
class SettleDeposit:
    """The held deposit's CLTV deadline nears and the final invoice is unpaid: settle the deposit."""

    key: str
    invoice_key: str
    at: datetime


@dataclass(frozen=True)
class CancelDeposit:
    """The energy is paid (or none was drawn): cancel the held deposit (the driver's sats go back)."""

    key: str
    invoice_key: str
    at: datetime


@dataclass(frozen=True)
class CloseSession:
    """The session's money is settled (or written off): record the outcome and the final bill."""

    key: str
    at: datetime
    outcome: CloseOutcome
    bill: Bill


Decision = (
    IssueInvoice
    | IssueFinalInvoice
    | ExpireInvoice
    | CancelInvoice
    | RemoteStart
    | Suspend
    | Resume
    | StopTransaction
    | SettleDeposit
    | CancelDeposit
    | CloseSession
)


@dataclass(frozen=True)
class Step:
    """The state with every decision applied (persist it), and the decisions (act on them after)."""

    state: SessionSettlement
    decisions: tuple[Decision, ...]


# -- projections -------------------------------------------------------------------------------------


def _running_since(state: SessionSettlement) -> datetime | None:
    """Start of the stretch since the last sample during which the charger is assumed to draw power."""
    if state.metered_at is None:
        return None
    if state.resumed_at is not None and state.resumed_at > state.metered_at:
        return state.resumed_at
    return state.metered_at


def projected_delivered_wh(state: SessionSettlement, now: datetime) -> int:
    """Metered Wh plus the last reported power since the last sample (not while suspended)."""
    start = _running_since(state)
    if not state.transaction_active or start is None:
        return state.delivered_wh
    end = now if state.suspended_since is None else min(now, state.suspended_since)
    if end <= start:
        return state.delivered_wh
    # to the microsecond, rounded up: whole seconds would let a tick-by-tick check see nothing of the
    # energy drawn since the last sample until a full second had passed
    return state.delivered_wh + energy_wh_over(state.power_w, end - start)


def credit_exhausted_since(state: SessionSettlement, now: datetime) -> datetime | None:
    """When the credit ran out (metered, or projected for a charger that has gone quiet), else None."""
    if not state.transaction_active:
        return None
    if state.credit_wh <= 0:
        return state.credit_exhausted_at or state.metered_at or state.transaction_started_at
    if state.paid_wh - projected_delivered_wh(state, now) > 0:
        return None
    start = _running_since(state)
    if start is None or state.power_w <= 0:
        return None
    return start + timedelta(seconds=seconds_to_deliver(state.credit_wh, state.power_w))


# -- the policy --------------------------------------------------------------------------------------

_MAX_DECISIONS_PER_STEP = 32


def step(state: SessionSettlement, tariff: Tariff, now: datetime) -> Step:
    """All decisions due at ``now``, each applied in turn to the returned state. Pure and deterministic."""
    require_aware(now)
    decisions: list[Decision] = []
    while (decision := _next_decision(state, tariff, now)) is not None:
        decisions.append(decision)
        state = apply_decision(state, decision)
        if len(decisions) > _MAX_DECISIONS_PER_STEP:  # pragma: no cover - a bug, not an input
            raise RuntimeError("settlement policy did not settle")
    return Step(state=state, decisions=tuple(decisions))


def decide(state: SessionSettlement, tariff: Tariff, now: datetime) -> tuple[Decision, ...]:
    """The decisions of ``step`` without the resulting state."""
    return step(state, tariff, now).decisions


def _next_decision(state: SessionSettlement, tariff: Tariff, now: datetime) -> Decision | None:
    if state.closed_at is not None:
        return None
    for invoice in state.open_invoices():
        if invoice.kind is InvoiceKind.DEPOSIT and state.deposit_accepted_at is not None:
            continue  # a held deposit's deadline is its HTLC's CLTV expiry, not the invoice's expiry
        if now >= invoice.expires_at:
            return ExpireInvoice(
                key=f"{state.session_id}/expire/{invoice.seq}", invoice_key=invoice.key, at=now
            )
    if state.transaction_ended_at is not None:
        return _after_end(state, tariff, now)
    if state.transaction_started_at is None:
        return _before_start(state, tariff, now)
    return _during_transaction(state, tariff, now)


def _before_start(state: SessionSettlement, tariff: Tariff, now: datetime) -> Decision | None:
    if state.deposit_held or any(i.status is InvoiceStatus.PAID for i in state.invoices):
        if state.remote_start and state.remote_start_requested_at is None:
            return RemoteStart(key=f"{state.session_id}/start", at=now)
        return None
    if state.open_invoices():
        return None
    if not state.invoices:
        # a prepaid session is opened with its prepayment (record_prepay_invoice), never without
        return None if state.prepaid else _increment_invoice(state, tariff, now, credit_wh=0)
    return _close(state, tariff, now, CloseOutcome.NOT_STARTED)


def _prepaid_during_transaction(state: SessionSettlement, tariff: Tariff, now: datetime) -> Decision | None:
    """A prepaid session draws its prepayment down: no invoices; the power is cut as soon as the
    (projected) energy reaches what is prepaid, resumed by a top-up, and the transaction stopped after
    ``stop_after_s`` suspended, as for an invoice stream whose payments stopped."""
    sid = state.session_id
    credit_wh = state.covered_wh - projected_delivered_wh(state, now)
    if state.stop_requested_at is not None:
        return None
    if state.suspended_since is not None:
        if credit_wh > 0:
            return Resume(key=f"{sid}/resume/{state.suspension_count}", at=now)
        if whole_seconds(now - state.suspended_since) >= tariff.stop_after_s:
            return StopTransaction(key=f"{sid}/stop", at=now, reason=StopReason.SUSPENDED_TOO_LONG)
        return None
    if credit_wh <= 0:
        return _suspend(state, now, SuspendReason.PREPAYMENT_USED)
    return None


def _during_transaction(state: SessionSettlement, tariff: Tariff, now: datetime) -> Decision | None:
    if state.prepaid:
        return _prepaid_during_transaction(state, tariff, now)
    sid = state.session_id
    projected_wh = projected_delivered_wh(state, now)
    credit_wh = state.paid_wh - projected_wh
    stopping = state.stop_requested_at is not None
    if state.suspended_since is not None and not stopping:
        # Resume once the payer is back within the rules that suspended it: delivered energy within the
        # allowance of what is paid, and no invoice overdue (a payment restarts the grace period, so a
        # late payment that leaves a small deficit resumes, and the deficit goes on the next invoice).
        exhausted_at = credit_exhausted_since(state, now)
        overdue = exhausted_at is not None and whole_seconds(now - exhausted_at) >= tariff.grace_s
        if credit_wh > 0 or (projected_wh <= state.paid_wh + tariff.allowance_wh and not overdue):
            return Resume(key=f"{sid}/resume/{state.suspension_count}", at=now)
        if whole_seconds(now - state.suspended_since) >= tariff.stop_after_s:
            return StopTransaction(key=f"{sid}/stop", at=now, reason=StopReason.SUSPENDED_TOO_LONG)
    if stopping:
        return None
    increment_wh = increment_wh_for(tariff, state.power_w)
    if not state.open_invoices(InvoiceKind.INCREMENT) and 2 * credit_wh < increment_wh:
        return _increment_invoice(state, tariff, now, credit_wh=credit_wh)
    if state.suspended_since is None:
        if projected_wh > state.paid_wh + tariff.allowance_wh:
            return _suspend(state, now, SuspendReason.ALLOWANCE_EXCEEDED)
        exhausted_at = credit_exhausted_since(state, now)
        if exhausted_at is not None and whole_seconds(now - exhausted_at) >= tariff.grace_s:
            return _suspend(state, now, SuspendReason.PAYMENT_OVERDUE)
    return None


def _after_end(state: SessionSettlement, tariff: Tariff, now: datetime) -> Decision | None:
    sid = state.session_id
    for invoice in (*state.open_invoices(InvoiceKind.INCREMENT), *state.open_invoices(InvoiceKind.PREPAY)):
        return CancelInvoice(key=f"{sid}/cancel/{invoice.seq}", invoice_key=invoice.key, at=now)
    deposit = state.deposit
    if deposit is not None and deposit.status is InvoiceStatus.OPEN and state.deposit_accepted_at is None:
        return CancelInvoice(key=f"{sid}/cancel/{deposit.seq}", invoice_key=deposit.key, at=now)
    if deposit is not None and state.deposit_held:
        decided, decision = _held_deposit_after_end(state, tariff, now)
        if decided:
            return decision
    bill = compute_bill(state, tariff, now)
    final = state.final_invoice
    if final is not None and final.status is InvoiceStatus.OPEN:
        if bill.shortfall_msat == final.amount_msat:
            return None  # waiting for the payment or the expiry
        # a late increment payment shrank the shortfall: cancel, then ask for the rest (or nothing)
        return CancelInvoice(key=f"{sid}/cancel/{final.seq}", invoice_key=final.key, at=now)
    if final is not None and final.status in (InvoiceStatus.PAID, InvoiceStatus.EXPIRED):
        outcome = CloseOutcome.SETTLED if bill.shortfall_msat == 0 else CloseOutcome.UNPAID_DEBT
        return _close(state, tariff, now, outcome, bill)
    # no final invoice yet (or the previous one was canceled to be resized)
    if bill.shortfall_msat > 0:
        seq = state.next_seq
        return IssueFinalInvoice(
            key=state.invoice_key(seq),
            seq=seq,
            at=now,
            energy_wh=bill.shortfall_wh,
            price_msat_per_kwh=bill.shortfall_price_msat_per_kwh,
            fee_msat=bill.unpaid_fee_msat,
            amount_msat=bill.shortfall_msat,
            expires_at=now + timedelta(seconds=tariff.invoice_expiry_s),
        )
    ran = state.transaction_started_at is not None
    return _close(state, tariff, now, CloseOutcome.SETTLED if ran else CloseOutcome.NOT_STARTED, bill)


def _held_deposit_after_end(
    state: SessionSettlement, tariff: Tariff, now: datetime
) -> tuple[bool, Decision | None]:
    """A held deposit at the end: settle it when its CLTV deadline nears; cancel it once the energy is
    paid (the final invoice); while neither, the final invoice is issued as usual (not decided here),
    and an expired final invoice waits for the deadline instead of closing the session as unpaid.
    (Whether this decided, the decision or None to wait.)"""
    sid = state.session_id
    deposit = state.deposit
    assert deposit is not None
    if state.deposit_settle_requested_at is not None:
        return True, None  # waiting for the node's settlement to be recorded (the invoice stream)
    if state.deposit_deadline_at is not None:
        return True, SettleDeposit(key=f"{sid}/settle-deposit", invoice_key=deposit.key, at=now)
    if compute_bill(state, tariff, now).shortfall_msat == 0:
        return True, CancelDeposit(key=f"{sid}/cancel-deposit", invoice_key=deposit.key, at=now)
    final = state.final_invoice
    if final is not None and final.status is InvoiceStatus.EXPIRED:
        return True, None
    return False, None


def _increment_invoice(
    state: SessionSettlement, tariff: Tariff, now: datetime, *, credit_wh: int
) -> IssueInvoice:
    energy_wh = increment_wh_for(tariff, state.power_w) + max(0, -credit_wh)
    price = price_at(tariff, now)
    fee = 0 if state.fee_paid else (state.session_fee_msat if state.invoices else tariff.session_fee_msat)
    seq = state.next_seq
    return IssueInvoice(
        key=state.invoice_key(seq),
        seq=seq,
        at=now,
        energy_wh=energy_wh,
        price_msat_per_kwh=price,
        fee_msat=fee,
        amount_msat=msat_for_energy(energy_wh, price) + fee,
        expires_at=now + timedelta(seconds=tariff.invoice_expiry_s),
    )


def _suspend(state: SessionSettlement, now: datetime, reason: SuspendReason) -> Suspend:
    return Suspend(key=f"{state.session_id}/suspend/{state.suspension_count + 1}", at=now, reason=reason)


def _close(
    state: SessionSettlement, tariff: Tariff, now: datetime, outcome: CloseOutcome, bill: Bill | None = None
) -> CloseSession:
    return CloseSession(
        key=f"{state.session_id}/close",
        at=now,
        outcome=outcome,
        bill=bill if bill is not None else compute_bill(state, tariff, now),
    )


# -- applying decisions ------------------------------------------------------------------------------


def issued_invoice(decision: IssueInvoice | IssueFinalInvoice) -> Invoice:
    """The open invoice an issuing decision records."""
    return Invoice(
        key=decision.key,
        seq=decision.seq,
        kind=InvoiceKind.FINAL if isinstance(decision, IssueFinalInvoice) else InvoiceKind.INCREMENT,
        energy_wh=decision.energy_wh,
        price_msat_per_kwh=decision.price_msat_per_kwh,
        fee_msat=decision.fee_msat,
        amount_msat=decision.amount_msat,
        status=InvoiceStatus.OPEN,
        created_at=decision.at,
        expires_at=decision.expires_at,
    )


def apply_decision(state: SessionSettlement, decision: Decision) -> SessionSettlement:
    """The state after ``decision``'s effect is recorded. A decision already applied changes nothing."""
    match decision:
        case IssueInvoice() | IssueFinalInvoice():
            if any(i.key == decision.key for i in state.invoices):
                return state
            return replace(state, invoices=(*state.invoices, issued_invoice(decision)))
        case ExpireInvoice():
            return _set_status(state, decision.invoice_key, InvoiceStatus.EXPIRED)
        case CancelInvoice():
            return _set_status(state, decision.invoice_key, InvoiceStatus.CANCELED)
        case RemoteStart():
            if state.remote_start_requested_at is not None:
                return state
            return replace(state, remote_start_requested_at=decision.at)
        case Suspend():
            if (
                state.suspended_since is not None
                or decision.key != _suspend(state, decision.at, decision.reason).key
            ):
                return state
            return replace(state, suspended_since=decision.at, suspension_count=state.suspension_count + 1)
        case Resume():
            if state.suspended_since is None:
                return state
            return replace(state, suspended_since=None, resumed_at=decision.at)
        case StopTransaction():
            if state.stop_requested_at is not None:
                return state
            return replace(state, stop_requested_at=decision.at)
        case SettleDeposit():
            if state.deposit_settle_requested_at is not None:
                return state
            return replace(state, deposit_settle_requested_at=decision.at)
        case CancelDeposit():
            return _set_status(state, decision.invoice_key, InvoiceStatus.CANCELED)
        case CloseSession():
            if state.closed_at is not None:
                return state
            return replace(state, closed_at=decision.at, outcome=decision.outcome)
    raise TypeError(f"not a settlement decision: {decision!r}")  # pragma: no cover


def _set_status(state: SessionSettlement, invoice_key: str, status: InvoiceStatus) -> SessionSettlement:
    """Only an open invoice changes status here; a paid one stays paid."""
    invoice = state.invoice(invoice_key)
    if invoice.status is not InvoiceStatus.OPEN:
        return state
    updated = replace(invoice, status=status)
    return replace(state, invoices=tuple(updated if i.key == invoice_key else i for i in state.invoices))
