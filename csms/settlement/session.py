"""The settlement state of one charging session, and the facts that change it.

``SessionSettlement`` is everything the policy needs, as an immutable value. The outside world changes it
only through the ``record_*`` functions below (facts: a meter sample, a payment, the transaction's start
and end) and through ``policy.apply_decision`` (the policy's own decisions). All of them are pure and
idempotent: recording the same fact twice gives the same state, so a replayed meter sample or a settle
event delivered twice never counts twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from csms.settlement.rounding import interpolate_seconds, whole_seconds
from csms.settlement.tariff import require_aware


class InvoiceKind(StrEnum):
    INCREMENT = "increment"  # prepays energy during the transaction
    FINAL = "final"  # the shortfall after the transaction ended
    PREPAY = "prepay"  # an amount the driver chose (LNURL-pay): drawn down as energy flows
    DEPOSIT = "deposit"  # a hold invoice: held (accepted) while charging, canceled or settled at the end


class InvoiceStatus(StrEnum):
    OPEN = "open"
    PAID = "paid"
    EXPIRED = "expired"
    CANCELED = "canceled"


class CloseOutcome(StrEnum):
    SETTLED = "settled"  # everything consumed is paid (a surplus, if any, is refundable)
    UNPAID_DEBT = "unpaid_debt"  # the final invoice expired unpaid
    NOT_STARTED = "not_started"  # no transaction ever ran; anything paid is refundable


@dataclass(frozen=True)
class Invoice:
    """One invoice of a session: the Wh it prepays, the price they were sold at, and its state.

    ``key`` is the stable idempotency key (``"{session_id}/invoice/{seq}"``); the Lightning glue stores the
    node's payment hash and bolt11 next to it. ``amount_msat == msat_for_energy(energy_wh, price) + fee``.
    """

    key: str
    seq: int
    kind: InvoiceKind
    energy_wh: int
    price_msat_per_kwh: int
    fee_msat: int
    amount_msat: int
    status: InvoiceStatus
    created_at: datetime
    expires_at: datetime
    paid_at: datetime | None = None

    @property
    def energy_amount_msat(self) -> int:
        return self.amount_msat - self.fee_msat

    def to_dict(self) -> dict[str, Any]:
        """The invoice as JSON-ready data. An invoice never changes (a new state replaces it), so the
        dict is made once: a long session's state is written with every meter sample, and its paid
        invoices would otherwise be converted again each time. Callers must not modify it."""
        cached: dict[str, Any] | None = self.__dict__.get("_as_dict")
        if cached is None:
            cached = _dump(self)
            object.__setattr__(self, "_as_dict", cached)
        return cached

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Invoice:
        return cls(
            key=data["key"],
            seq=data["seq"],
            kind=InvoiceKind(data["kind"]),
            energy_wh=data["energy_wh"],
            price_msat_per_kwh=data["price_msat_per_kwh"],
            fee_msat=data["fee_msat"],
            amount_msat=data["amount_msat"],
            status=InvoiceStatus(data["status"]),
            created_at=_load_time(data["created_at"]),
            expires_at=_load_time(data["expires_at"]),
            paid_at=_load_optional_time(data.get("paid_at")),
        )


@dataclass(frozen=True)
class SessionSettlement:
    """Settlement state of one session.

    ``delivered_wh`` is the energy delivered since the transaction started (normalised, monotonic);
    ``power_w`` and ``metered_at`` are the last sample's power and time. ``credit_exhausted_at`` is when
    the (metered) credit last fell to zero or below, ``None`` while there is credit.
    ``suspension_count`` numbers suspensions, so each Suspend/Resume has its own key.
    ``prepaid``: the driver prepays amounts of their choice (LNURL-pay, ``record_prepay_invoice``)
    instead of paying an invoice stream; the policy issues no increment invoices and cuts the power
    when the prepayment is used up.
    """

    session_id: str
    created_at: datetime
    remote_start: bool = False
    prepaid: bool = False
    invoices: tuple[Invoice, ...] = ()
    delivered_wh: int = 0
    power_w: int = 0
    metered_at: datetime | None = None
    transaction_started_at: datetime | None = None
    transaction_ended_at: datetime | None = None
    credit_exhausted_at: datetime | None = None
    suspended_since: datetime | None = None
    suspension_count: int = 0
    resumed_at: datetime | None = None
    remote_start_requested_at: datetime | None = None
    stop_requested_at: datetime | None = None
    closed_at: datetime | None = None
    outcome: CloseOutcome | None = None
    # hold-invoice deposit (a prepaid session whose first invoice is a DEPOSIT): when its HTLC was
    # accepted, the HTLC's CLTV expiry height, when the engine saw that deadline near, when the policy
    # asked to settle it
    deposit_accepted_at: datetime | None = None
    deposit_expiry_height: int = 0
    deposit_deadline_at: datetime | None = None
    deposit_settle_requested_at: datetime | None = None

    # -- derived values ----------------------------------------------------------------------------

    @property
    def paid_wh(self) -> int:
        """Wh covered by paid invoices (each invoice counted once, whatever happened to it before)."""
        return sum(i.energy_wh for i in self.invoices if i.status is InvoiceStatus.PAID)

    @property
    def paid_msat(self) -> int:
        return sum(i.amount_msat for i in self.invoices if i.status is InvoiceStatus.PAID)

    @property
    def deposit(self) -> Invoice | None:
        return next((i for i in self.invoices if i.kind is InvoiceKind.DEPOSIT), None)

    @property
    def deposit_held(self) -> bool:
        """The deposit's HTLC is held: accepted, neither settled (paid) nor canceled."""
        deposit = self.deposit
        if deposit is None or self.deposit_accepted_at is None:
            return False
        return deposit.status is InvoiceStatus.OPEN

    @property
    def covered_wh(self) -> int:
        """Wh paid, plus those the held deposit would pay for: what the power may draw."""
        held = self.deposit
        return self.paid_wh + (held.energy_wh if held is not None and self.deposit_held else 0)

    @property
    def credit_wh(self) -> int:
        """Wh covered by paid invoices minus Wh delivered (metered); negative when energy is unpaid."""
        return self.paid_wh - self.delivered_wh

    @property
    def transaction_active(self) -> bool:
        return self.transaction_started_at is not None and self.transaction_ended_at is None

    @property
    def next_seq(self) -> int:
        return len(self.invoices) + 1

    def invoice_key(self, seq: int) -> str:
        return f"{self.session_id}/invoice/{seq}"

    def open_invoices(self, kind: InvoiceKind | None = None) -> tuple[Invoice, ...]:
        return tuple(
            i for i in self.invoices if i.status is InvoiceStatus.OPEN and (kind is None or i.kind is kind)
        )

    def invoice(self, key: str) -> Invoice:
        for candidate in self.invoices:
            if candidate.key == key:
                return candidate
        raise UnknownInvoiceError(key)

    @property
    def final_invoice(self) -> Invoice | None:
        """The latest final invoice (a late payment can make the policy replace it with a smaller one)."""
        finals = [i for i in self.invoices if i.kind is InvoiceKind.FINAL]
        return max(finals, key=lambda i: i.seq) if finals else None

    @property
    def session_fee_msat(self) -> int:
        """The session fee, fixed by the first invoice (replacements carry the same fee)."""
        return self.invoices[0].fee_msat if self.invoices else 0

    @property
    def fee_paid(self) -> bool:
        return any(i.fee_msat > 0 and i.status is InvoiceStatus.PAID for i in self.invoices)

    # -- persistence ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (ISO 8601 times); ``from_dict(to_dict())`` gives an equal state."""
        data = _dump(self)
        data["invoices"] = [i.to_dict() for i in self.invoices]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionSettlement:
        times = {
            name: _load_optional_time(data.get(name))
            for name in (
                "metered_at",
                "transaction_started_at",
                "transaction_ended_at",
                "credit_exhausted_at",
                "suspended_since",
                "resumed_at",
                "remote_start_requested_at",
                "stop_requested_at",
                "closed_at",
                "deposit_accepted_at",
                "deposit_deadline_at",
                "deposit_settle_requested_at",
            )
        }
        return cls(
            session_id=data["session_id"],
            created_at=_load_time(data["created_at"]),
            remote_start=bool(data.get("remote_start", False)),
            prepaid=bool(data.get("prepaid", False)),
            invoices=tuple(Invoice.from_dict(i) for i in data.get("invoices", ())),
            delivered_wh=int(data.get("delivered_wh", 0)),
            power_w=int(data.get("power_w", 0)),
            suspension_count=int(data.get("suspension_count", 0)),
            deposit_expiry_height=int(data.get("deposit_expiry_height", 0)),
            outcome=None if data.get("outcome") is None else CloseOutcome(data["outcome"]),
            **times,
        )


class UnknownInvoiceError(KeyError):
    """A payment or lookup names an invoice key this session does not have."""


# -- facts ----------------------------------------------------------------------------------------


def open_session(session_id: str, at: datetime, *, remote_start: bool) -> SessionSettlement:
    """A new session. ``remote_start=True``: walk-up/API start, the charger is started only once the first
    invoice is paid (the policy emits ``RemoteStart``). ``False``: the charger already started (id tag);
    call ``record_transaction_started`` next."""
    return SessionSettlement(session_id=session_id, created_at=require_aware(at), remote_start=remote_start)


def open_prepaid_session(session_id: str, at: datetime) -> SessionSettlement:
    """A new prepaid session (LNURL-pay): the charger starts once a prepayment is paid."""
    return SessionSettlement(
        session_id=session_id, created_at=require_aware(at), remote_start=True, prepaid=True
    )


def prepay_energy_wh(amount_msat: int, fee_msat: int, price_msat_per_kwh: int) -> int:
    """Whole Wh a prepayment buys after the fee, rounded down (toward the buyer: what is left below
    one Wh's price is refunded with the unused energy)."""
    if amount_msat < fee_msat or price_msat_per_kwh <= 0:
        raise ValueError("the prepayment must cover the fee, and the price must be > 0")
    return (amount_msat - fee_msat) * 1000 // price_msat_per_kwh


def record_prepay_invoice(
    state: SessionSettlement,
    amount_msat: int,
    price_msat_per_kwh: int,
    fee_due_msat: int,
    at: datetime,
    expires_at: datetime,
) -> SessionSettlement:
    """The driver asked to prepay ``amount_msat`` (a prepaid session's first payment or a top-up): an
    open PREPAY invoice for it. It carries the session fee (``fee_due_msat``) while no paid invoice
    has; its energy is what the rest buys at ``price_msat_per_kwh``. Unlike the policy's invoices its
    amount is the driver's: ``amount_msat - fee`` may exceed the energy's price by less than one Wh's
    price, which is refunded with the unused energy (``bill.RefundLine``)."""
    require_aware(at)
    if not state.prepaid:
        raise ValueError("not a prepaid session")
    fee = 0 if state.fee_paid else fee_due_msat
    seq = state.next_seq
    invoice = Invoice(
        key=state.invoice_key(seq),
        seq=seq,
        kind=InvoiceKind.PREPAY,
        energy_wh=prepay_energy_wh(amount_msat, fee, price_msat_per_kwh),
        price_msat_per_kwh=price_msat_per_kwh,
        fee_msat=fee,
        amount_msat=amount_msat,
        status=InvoiceStatus.OPEN,
        created_at=at,
        expires_at=require_aware(expires_at),
    )
    return replace(state, invoices=(*state.invoices, invoice))


def record_deposit_invoice(
    state: SessionSettlement,
    amount_msat: int,
    price_msat_per_kwh: int,
    fee_msat: int,
    at: datetime,
    expires_at: datetime,
) -> SessionSettlement:
    """A deposit session's hold invoice (a tariff's ``deposit_msat``): its energy is what the deposit
    would buy, the most the charge may draw. Paid only if settled at the deadline."""
    state = record_prepay_invoice(state, amount_msat, price_msat_per_kwh, fee_msat, at, expires_at)
    deposit = replace(state.invoices[-1], kind=InvoiceKind.DEPOSIT)
    return replace(state, invoices=(*state.invoices[:-1], deposit))


def record_deposit_accepted(state: SessionSettlement, at: datetime, expiry_height: int) -> SessionSettlement:
    """The deposit's HTLC is held (ACCEPTED), expiring at block ``expiry_height``. Idempotent."""
    require_aware(at)
    deposit = state.deposit
    if deposit is None or deposit.status is not InvoiceStatus.OPEN or state.deposit_accepted_at is not None:
        return state
    return replace(state, deposit_accepted_at=at, deposit_expiry_height=expiry_height)


def record_deposit_deadline(state: SessionSettlement, at: datetime) -> SessionSettlement:
    """The held deposit's CLTV deadline is near (the engine watches the block height). Idempotent."""
    require_aware(at)
    if not state.deposit_held or state.deposit_deadline_at is not None:
        return state
    return replace(state, deposit_deadline_at=at)


def record_transaction_started(state: SessionSettlement, at: datetime) -> SessionSettlement:
    """The charger started the transaction (delivered energy counts from here). Idempotent."""
    require_aware(at)
    if state.transaction_started_at is not None or state.transaction_ended_at is not None:
        return state
    started = replace(state, transaction_started_at=at, metered_at=at, delivered_wh=0, power_w=0)
    if started.credit_wh <= 0 and started.credit_exhausted_at is None:
        started = replace(started, credit_exhausted_at=at)
    return started


def record_meter(
    state: SessionSettlement, delivered_wh: int, power_w: int, at: datetime
) -> SessionSettlement:
    """A normalised meter sample: energy delivered since the transaction started, current power.

    Energy is monotonic (a lower reading is ignored), a sample older than the last one does not change
    power. Samples outside the transaction (before its start or after its end, whose meter reading is
    authoritative) are ignored. When the credit crosses zero, the crossing time is interpolated between
    the previous sample and this one.
    """
    require_aware(at)
    if not state.transaction_active or state.metered_at is None:
        return state
    new_delivered = max(state.delivered_wh, delivered_wh)
    updated = replace(state, delivered_wh=new_delivered)
    if at >= state.metered_at:
        updated = replace(updated, power_w=max(0, power_w), metered_at=at)
    if state.credit_wh > 0 >= updated.credit_wh and updated.credit_exhausted_at is None:
        elapsed = whole_seconds(at - state.metered_at)
        if elapsed <= 0:
            exhausted_at = at
        else:
            offset = interpolate_seconds(elapsed, state.credit_wh, new_delivered - state.delivered_wh)
            exhausted_at = state.metered_at + timedelta(seconds=offset)
        updated = replace(updated, credit_exhausted_at=exhausted_at)
    return updated


def record_payment(state: SessionSettlement, key: str, paid_at: datetime) -> SessionSettlement:
    """The node settled invoice ``key``. Idempotent: an invoice already paid is not credited again.

    A settlement is a fact even for an invoice the policy had already expired or canceled (a payment
    racing the expiry): it is marked paid and, if not needed, ends up as refundable credit.
    Raises ``UnknownInvoiceError`` for a key this session does not have.
    """
    require_aware(paid_at)
    invoice = state.invoice(key)
    if invoice.status is InvoiceStatus.PAID:
        return state
    paid = replace(invoice, status=InvoiceStatus.PAID, paid_at=paid_at)
    updated = replace(state, invoices=tuple(paid if i.key == key else i for i in state.invoices))
    if updated.credit_wh > 0:
        updated = replace(updated, credit_exhausted_at=None)
    elif updated.credit_exhausted_at is not None and paid_at > updated.credit_exhausted_at:
        # still short (energy drawn while the payment was in flight): the payer gets a fresh grace
        # period to pay the next invoice, which covers the deficit
        updated = replace(updated, credit_exhausted_at=paid_at)
    return updated


def record_transaction_ended(
    state: SessionSettlement, at: datetime, delivered_wh: int | None = None
) -> SessionSettlement:
    """The transaction ended (or, for a remote start, will never start). ``delivered_wh`` is the final,
    authoritative reading if known. Idempotent: a second end changes nothing."""
    require_aware(at)
    if state.transaction_ended_at is not None:
        return state
    delivered = state.delivered_wh
    if delivered_wh is not None and state.transaction_started_at is not None:
        delivered = max(delivered, delivered_wh)
    return replace(state, transaction_ended_at=at, delivered_wh=delivered, power_w=0)


# -- (de)serialisation helpers -----------------------------------------------------------------------


def _dump(obj: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, StrEnum):
            value = value.value
        data[f.name] = value
    return data


def _load_time(value: str | datetime) -> datetime:
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return require_aware(when)


def _load_optional_time(value: str | datetime | None) -> datetime | None:
    return None if value is None else _load_time(value)
