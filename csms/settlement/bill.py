"""What a session costs, what it paid, and what is owed or refundable; and the session view the API shows.

The cost is priced FIFO: delivered Wh consume the paid invoices' tranches in invoice order, each at the
price its invoice sold it at; Wh beyond every paid tranche (the shortfall) are priced at the price of the
latest invoice that offered them (the final invoice, else the latest increment invoice). Plus the session
fee once a transaction has run. Every amount goes through ``rounding.msat_for_energy``.

Accounting identity (tested): ``paid_msat - refundable_msat + shortfall_msat == cost_msat``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from csms.settlement.rounding import msat_for_energy
from csms.settlement.session import InvoiceKind, InvoiceStatus, SessionSettlement
from csms.settlement.tariff import Tariff, price_at


@dataclass(frozen=True)
class CostLine:
    """Consumed Wh and what they cost. ``invoice_key`` is the paid tranche they came from, or ``None``
    for consumed Wh no paid invoice covers (the shortfall)."""

    invoice_key: str | None
    energy_wh: int
    price_msat_per_kwh: int
    amount_msat: int


@dataclass(frozen=True)
class RefundLine:
    """What a paid invoice returns: its prepaid Wh that were not consumed, and a fee paid twice (or
    paid for a session whose transaction never ran)."""

    invoice_key: str
    energy_wh: int
    price_msat_per_kwh: int
    energy_msat: int
    fee_msat: int

    @property
    def amount_msat(self) -> int:
        return self.energy_msat + self.fee_msat


@dataclass(frozen=True)
class Bill:
    delivered_wh: int
    fee_msat: int  # session fee included in the cost (0 when no transaction ran)
    lines: tuple[CostLine, ...]
    cost_msat: int  # sum of lines + fee_msat
    paid_msat: int  # sum of paid invoices
    refunds: tuple[RefundLine, ...]
    refundable_msat: int
    shortfall_wh: int  # consumed Wh not covered by a paid invoice
    shortfall_price_msat_per_kwh: int
    unpaid_fee_msat: int
    shortfall_msat: int  # owed: shortfall Wh priced + unpaid fee


def compute_bill(state: SessionSettlement, tariff: Tariff, now: datetime) -> Bill:
    """The bill of ``state`` as it stands (a running figure until the transaction ends).

    ``tariff`` and ``now`` only matter for a session with no invoice at all (then the shortfall is
    priced at ``price_at(tariff, end or now)``).
    """
    transaction_ran = state.transaction_started_at is not None
    fee = (state.session_fee_msat if state.invoices else tariff.session_fee_msat) if transaction_ran else 0
    paid = sorted((i for i in state.invoices if i.status is InvoiceStatus.PAID), key=lambda i: i.seq)

    remaining_wh = state.delivered_wh if transaction_ran else 0
    fee_to_cover = fee
    lines: list[CostLine] = []
    refunds: list[RefundLine] = []
    for invoice in paid:
        used_wh = min(remaining_wh, invoice.energy_wh)
        remaining_wh -= used_wh
        used_msat = msat_for_energy(used_wh, invoice.price_msat_per_kwh)
        if used_wh > 0:
            lines.append(CostLine(invoice.key, used_wh, invoice.price_msat_per_kwh, used_msat))
        fee_used = min(fee_to_cover, invoice.fee_msat)
        fee_to_cover -= fee_used
        refund = RefundLine(
            invoice_key=invoice.key,
            energy_wh=invoice.energy_wh - used_wh,
            price_msat_per_kwh=invoice.price_msat_per_kwh,
            energy_msat=invoice.energy_amount_msat - used_msat,
            fee_msat=invoice.fee_msat - fee_used,
        )
        if refund.energy_wh > 0 or refund.amount_msat > 0:
            refunds.append(refund)

    shortfall_price = _shortfall_price(state, tariff, now)
    shortfall_energy_msat = msat_for_energy(remaining_wh, shortfall_price)
    if remaining_wh > 0:
        lines.append(CostLine(None, remaining_wh, shortfall_price, shortfall_energy_msat))

    cost = sum(line.amount_msat for line in lines) + fee
    return Bill(
        delivered_wh=state.delivered_wh,
        fee_msat=fee,
        lines=tuple(lines),
        cost_msat=cost,
        paid_msat=sum(i.amount_msat for i in paid),
        refunds=tuple(refunds),
        refundable_msat=sum(r.amount_msat for r in refunds),
        shortfall_wh=remaining_wh,
        shortfall_price_msat_per_kwh=shortfall_price,
        unpaid_fee_msat=fee_to_cover,
        shortfall_msat=shortfall_energy_msat + fee_to_cover,
    )


def _shortfall_price(state: SessionSettlement, tariff: Tariff, now: datetime) -> int:
    final = state.final_invoice
    if final is not None:
        return final.price_msat_per_kwh
    increments = [i for i in state.invoices if i.kind in (InvoiceKind.INCREMENT, InvoiceKind.PREPAY)]
    if increments:
        return max(increments, key=lambda i: i.seq).price_msat_per_kwh
    return price_at(tariff, state.transaction_ended_at or now)


class SessionState(StrEnum):
    AWAITING_PAYMENT = "awaiting_payment"  # nothing paid yet (the first invoice is outstanding)
    CHARGING = "charging"  # paid ahead (or waiting for the car to start drawing)
    SUSPENDED = "suspended"  # power cut for non-payment
    AWAITING_PAYMENT_FINAL = "awaiting_payment_final"  # transaction ended, final invoice outstanding
    ENDED = "ended"


@dataclass(frozen=True)
class SessionView:
    """The settlement figures ``GET /api/v1/sessions/{id}`` shows."""

    state: SessionState
    delivered_wh: int
    cost_msat: int  # running cost: FIFO-priced delivered energy + session fee
    billed_msat: int  # invoices issued and not expired/canceled (open or paid)
    paid_msat: int
    credit_wh: int  # paid Wh - delivered Wh
    refundable_msat: int  # surplus paid, once the transaction has ended
    unpaid_msat: int  # consumed but not paid (after the end: the final invoice, then the debt)
    outcome: str | None


def session_state(state: SessionSettlement) -> SessionState:
    if state.closed_at is not None:
        return SessionState.ENDED
    if state.transaction_ended_at is not None:
        final = state.final_invoice
        if final is not None and final.status is InvoiceStatus.OPEN:
            return SessionState.AWAITING_PAYMENT_FINAL
        return SessionState.ENDED
    if state.suspended_since is not None:
        return SessionState.SUSPENDED
    if not state.deposit_held and not any(i.status is InvoiceStatus.PAID for i in state.invoices):
        return SessionState.AWAITING_PAYMENT
    return SessionState.CHARGING


def session_view(state: SessionSettlement, tariff: Tariff, now: datetime) -> SessionView:
    bill = compute_bill(state, tariff, now)
    ended = state.transaction_ended_at is not None
    return SessionView(
        state=session_state(state),
        delivered_wh=state.delivered_wh,
        cost_msat=bill.cost_msat,
        billed_msat=sum(
            i.amount_msat for i in state.invoices if i.status in (InvoiceStatus.OPEN, InvoiceStatus.PAID)
        ),
        paid_msat=bill.paid_msat,
        credit_wh=state.credit_wh,
        refundable_msat=bill.refundable_msat if ended else 0,
        unpaid_msat=bill.shortfall_msat,
        outcome=None if state.outcome is None else state.outcome.value,
    )
