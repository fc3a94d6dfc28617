"""/api/v1/ledger: the operator's books, every money movement of every session over a period.

Money in is each paid invoice, at the moment it was paid (a deposit that was settled is paid; a canceled
deposit moved nothing and is not listed); money out is each paid refund, and the routing fee the operator
paid on top of it. A refund still being paid or one that failed moved nothing (yet) and is not listed.
The session ledger (``/api/v1/sessions/{id}/ledger``) has the same invoices and refunds of one session,
whatever their status.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field
from sqlalchemy import select

from csms.api.access import operator_of
from csms.api.csv_export import csv_response
from csms.api.deps import service_of
from csms.api.document import OPERATOR_KEY, errors
from csms.api.problems import invalid
from csms.api.schemas import absent
from csms.charging.service import ChargingService
from csms.db.models import ChargingSession, LightningInvoice, Refund
from csms.settlement.session import InvoiceStatus

router = APIRouter(
    prefix="/api/v1/ledger",
    tags=["ledger"],
    dependencies=[Depends(operator_of)],
    responses=errors(401, 403),
)
Service = Annotated[ChargingService, Depends(service_of)]

DEFAULT_WINDOW = timedelta(days=30)
EARLIEST = datetime.min.replace(tzinfo=UTC)  # the window as far as UTC goes either way
LATEST = datetime.max.replace(tzinfo=UTC)
REFUND_PAID = "paid"  # a refund's status once the wallet's invoice is paid (csms.settlement.refunds)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]")


def _iso_text(value: Any) -> Any:
    """An ISO 8601 date-time, never a number of seconds (which pydantic would read as Unix time)."""
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise ValueError("must be an ISO 8601 date-time with a time zone, such as 2026-05-01T00:00:00Z")
    return value


Moment = Annotated[AwareDatetime, BeforeValidator(_iso_text)]


class Movement(BaseModel):
    """Money that moved: an invoice paid to the operator, or a refund the operator paid to a driver."""

    at: datetime = Field(description="When it was paid (the invoice's or the refund's paid_at)")
    kind: str = Field(description="The invoice's kind (increment, final, prepay, deposit), or refund")
    direction: Literal["in", "out"] = Field(description="in: an invoice paid; out: a refund paid")
    session_id: str
    charger_id: str
    key: str = Field(description="The invoice's or the refund's key, as in the session's ledger")
    payment_hash: str
    amount_msat: int = Field(description="What the invoice asked and was paid, or what the refund paid out")
    energy_wh: int = Field(
        description="The energy the invoice paid for (prepaid, not all of it used); 0 for a refund"
    )
    fee_msat: int = Field(
        description="An invoice's session fee part (in amount_msat); a refund's routing fee, which the "
        "operator paid on top of amount_msat"
    )


COLUMNS = tuple(Movement.model_fields)


class LedgerTotals(BaseModel):
    received_msat: int = Field(description="The paid invoices' amounts")
    refunded_msat: int = Field(description="The paid refunds' amounts")
    routing_fees_msat: int = Field(description="The paid refunds' routing fees")
    net_msat: int = Field(description="received_msat - refunded_msat - routing_fees_msat")
    energy_wh: int = Field(description="The energy the paid invoices paid for")


class OperatorLedger(BaseModel):
    since: datetime = Field(description="The window's start (included), in UTC")
    until: datetime = Field(description="The window's end (excluded), in UTC")
    totals: LedgerTotals
    movements: list[Movement] = Field(description="Every movement in the window, in time order")


def totals_of(movements: Iterable[Movement]) -> LedgerTotals:
    received = refunded = fees = energy = 0
    for m in movements:
        if m.direction == "in":
            received += m.amount_msat
            energy += m.energy_wh
        else:
            refunded += m.amount_msat
            fees += m.fee_msat
    return LedgerTotals(
        received_msat=received,
        refunded_msat=refunded,
        routing_fees_msat=fees,
        net_msat=received - refunded - fees,
        energy_wh=energy,
    )


def _utc(moment: datetime, *, rounding: datetime) -> datetime:
    """``moment`` in UTC; a moment beyond the years 1 to 9999 once in UTC is taken as ``rounding``."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return rounding


def window(since: datetime | None, until: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """[since, until) in UTC: until defaults to now, since to 30 days before until. A 422 problem naming
    ``since`` unless it is before until."""
    end = now if until is None else _utc(until, rounding=EARLIEST if until.year == 1 else LATEST)
    if since is None:
        start = end - DEFAULT_WINDOW if end - EARLIEST >= DEFAULT_WINDOW else EARLIEST
    else:
        start = _utc(since, rounding=EARLIEST if since.year == 1 else LATEST)
    if start >= end:
        raise invalid("since", f"must be before until ({end.isoformat()})")
    return start, end


async def movements_in(service: ChargingService, since: datetime, until: datetime) -> list[Movement]:
    """The window's paid invoices and paid refunds, in time order: one query each, with their sessions."""
    paid_invoices = (
        select(
            LightningInvoice.paid_at,
            LightningInvoice.kind,
            ChargingSession.id,
            ChargingSession.charger_id,
            LightningInvoice.key,
            LightningInvoice.payment_hash,
            LightningInvoice.amount_msat,
            LightningInvoice.energy_wh,
            LightningInvoice.fee_msat,
        )
        .join(ChargingSession, ChargingSession.number == LightningInvoice.session_number)
        .where(
            LightningInvoice.status == InvoiceStatus.PAID.value,
            LightningInvoice.paid_at >= since,
            LightningInvoice.paid_at < until,
        )
        .order_by(LightningInvoice.paid_at, LightningInvoice.key)
    )
    paid_refunds = (
        select(
            Refund.paid_at,
            ChargingSession.id,
            ChargingSession.charger_id,
            Refund.key,
            Refund.payment_hash,
            Refund.amount_msat,
            Refund.fee_msat,
        )
        .join(ChargingSession, ChargingSession.number == Refund.session_number)
        .where(Refund.status == REFUND_PAID, Refund.paid_at >= since, Refund.paid_at < until)
        .order_by(Refund.paid_at, Refund.key)
    )
    async with service.db() as db:
        invoices = (await db.execute(paid_invoices)).all()
        refunds = (await db.execute(paid_refunds)).all()
    money_in = (
        Movement(
            at=at,
            kind=kind,
            direction="in",
            session_id=session_id,
            charger_id=charger_id,
            key=key,
            payment_hash=payment_hash,
            amount_msat=amount,
            energy_wh=energy,
            fee_msat=fee,
        )
        for at, kind, session_id, charger_id, key, payment_hash, amount, energy, fee in invoices
    )
    money_out = (
        Movement(
            at=at,
            kind="refund",
            direction="out",
            session_id=session_id,
            charger_id=charger_id,
            key=key,
            payment_hash=payment_hash,
            amount_msat=amount,
            energy_wh=0,
            fee_msat=fee or 0,
        )
        for at, session_id, charger_id, key, payment_hash, amount, fee in refunds
    )
    return list(heapq.merge(money_in, money_out, key=lambda m: m.at))


@router.get(
    "",
    summary="The operator's ledger: every payment in and refund out of all sessions over a period",
    description="Each paid invoice (by when it was paid; a settled deposit included, a canceled one is "
    "not money received) and each paid refund (with the routing fee the operator paid on it), in time "
    "order, with the totals over the window: `net_msat = received_msat - refunded_msat - "
    "routing_fees_msat`. The window is `[since, until)`: by default the 30 days up to now (`since` "
    "alone: up to now; `until` alone: the 30 days before it). JSON, or with `format=csv` one row per "
    "movement under a header (the totals are the sums of its columns). Integers only: msat and Wh.",
    responses={
        200: {
            "model": OperatorLedger,
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "The movements: JSON with totals, or CSV with `format=csv`",
        },
        **errors(422),
    },
    openapi_extra={"security": [{OPERATOR_KEY: []}]},
)
async def operator_ledger(
    service: Service,
    since: Annotated[
        Moment,
        Query(
            default_factory=absent,
            description="The window's start, included: an ISO 8601 date-time with a time zone "
            "(default: 30 days before until)",
            examples=["2026-05-01T00:00:00Z"],
        ),
    ],
    until: Annotated[
        Moment,
        Query(
            default_factory=absent,
            description="The window's end, excluded: an ISO 8601 date-time with a time zone "
            "(default: now); after since",
            examples=["2026-06-01T00:00:00+02:00"],
        ),
    ],
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    start, end = window(since, until, datetime.now(UTC))
    movements = await movements_in(service, start, end)
    if format == "csv":
        filename = f"satwatt-ledger-{start.date().isoformat()}-{end.date().isoformat()}.csv"
        return csv_response((m.model_dump(mode="json") for m in movements), COLUMNS, filename)
    body = OperatorLedger(since=start, until=end, totals=totals_of(movements), movements=movements)
    return Response(body.model_dump_json(), media_type="application/json")
