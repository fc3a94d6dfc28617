"""/api/v1/tariffs: prices and the invoice-stream parameters chargers sell under."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from csms.api.auth import require_operator
from csms.api.deps import service_of
from csms.api.document import errors
from csms.api.problems import Problem
from csms.api.schemas import Strict, absent
from csms.charging.service import ChargingService
from csms.db.models import TariffRow
from csms.settlement.tariff import DEFAULT_TARIFF, Tariff, TariffError

router = APIRouter(
    prefix="/api/v1/tariffs",
    tags=["tariffs"],
    dependencies=[Depends(require_operator)],
    responses=errors(401),
)
Service = Annotated[ChargingService, Depends(service_of)]

#: Python's whitespace (``str.strip``) spelled out, so that every regex engine reads the class alike.
_NOT_SPACE = r"[^\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_HHMM_OR_24 = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"
PRICE = {"ge": 1_000, "le": 1_000_000_000}  # 1 sat to 1,000,000 sat per kWh: every Wh costs >= 1 msat
DAY_S = 86_400


class Window(Strict):
    start: str = Field(
        pattern=_HHMM,
        min_length=5,
        max_length=5,
        description="HH:MM local time, inclusive",
        examples=["17:00"],
    )
    end: str = Field(
        pattern=_HHMM_OR_24,
        min_length=5,
        max_length=5,
        description="HH:MM local time, exclusive; 24:00 is midnight; before start: crosses midnight. "
        "Must differ from start.",
        examples=["21:00"],
    )
    price_msat_per_kwh: int = Field(**PRICE)


class Schedule(Strict):
    """Daily price windows; outside every window the base price applies. Windows must not overlap."""

    zone: str = Field(
        min_length=1,
        max_length=64,
        description="IANA time zone of the windows",
        examples=["Europe/Berlin"],
        json_schema_extra={"format": "iana-time-zone"},
    )
    windows: list[Window] = Field(max_length=96, description="At most 96; no two overlap.")


class TariffChanges(Strict):
    """Any of a tariff's fields; money in msat, energy in Wh, durations in seconds. A field left out keeps
    its value; ``schedule: null`` removes the schedule."""

    name: str = Field(default_factory=absent, min_length=1, max_length=100, pattern=_NOT_SPACE)
    price_msat_per_kwh: int = Field(default_factory=absent, **PRICE)
    session_fee_msat: int = Field(default_factory=absent, ge=0, le=100_000_000_000)
    increment_wh: int = Field(default_factory=absent, ge=1, le=1_000_000)
    min_invoice_interval_s: int = Field(default_factory=absent, ge=0, le=DAY_S)
    allowance_wh: int = Field(default_factory=absent, ge=0, le=1_000_000)
    grace_s: int = Field(default_factory=absent, ge=0, le=DAY_S)
    stop_after_s: int = Field(default_factory=absent, ge=0, le=DAY_S)
    invoice_expiry_s: int = Field(default_factory=absent, ge=1, le=DAY_S)
    prepay_min_msat: int = Field(
        default_factory=absent,
        ge=1,
        le=100_000_000_000,
        description="Least a driver may prepay from a phone wallet (LNURL-pay); at least the session fee "
        "and one Wh's price",
    )
    prepay_max_msat: int = Field(
        default_factory=absent,
        ge=1,
        le=100_000_000_000,
        description="Most a driver may prepay (LNURL-pay); at least the least",
    )
    deposit_msat: int = Field(
        default_factory=absent,
        ge=0,
        le=100_000_000_000,
        description="0: off. Else walk-up sessions pay by a hold-invoice deposit of this much (canceled once "
        "the final invoice for the energy is paid, settled before its HTLC's deadline otherwise)",
    )
    schedule: Schedule | None = Field(default_factory=absent)


class TariffCreate(TariffChanges):
    """A new tariff: a name, and any field left out takes the default tariff's value."""

    name: str = Field(min_length=1, max_length=100, pattern=_NOT_SPACE)


class WindowOut(BaseModel):
    start: str
    end: str
    price_msat_per_kwh: int


class ScheduleOut(BaseModel):
    zone: str
    windows: list[WindowOut]


class TariffOut(BaseModel):
    id: str
    name: str
    price_msat_per_kwh: int
    session_fee_msat: int
    increment_wh: int
    min_invoice_interval_s: int
    allowance_wh: int
    grace_s: int
    stop_after_s: int
    invoice_expiry_s: int
    prepay_min_msat: int = DEFAULT_TARIFF.prepay_min_msat
    prepay_max_msat: int = DEFAULT_TARIFF.prepay_max_msat
    deposit_msat: int = DEFAULT_TARIFF.deposit_msat
    schedule: ScheduleOut | None


def tariff_out(row: TariffRow) -> TariffOut:
    return TariffOut(id=row.id, **row.definition)


def _validated(definition: dict[str, Any]) -> Tariff:
    try:
        return Tariff.from_dict(definition)
    except TariffError as exc:
        raise Problem(
            422,
            "Invalid tariff",
            f"{exc.field}: {exc.message}",
            errors=[{"field": exc.field, "message": exc.message}],
        ) from None


def _changes(body: TariffChanges) -> dict[str, Any]:
    return body.model_dump(exclude_unset=True)


@router.post("", status_code=201, response_model=TariffOut, summary="Create a tariff", responses=errors(422))
async def create_tariff(body: TariffCreate, service: Service, response: Response) -> TariffOut:
    definition = {**DEFAULT_TARIFF.to_dict(), **_changes(body)}
    tariff = _validated(definition)
    row = TariffRow(id="t_" + secrets.token_hex(6), name=tariff.name, definition=tariff.to_dict())
    async with service.db.begin() as db:
        db.add(row)
    response.headers["Location"] = f"/api/v1/tariffs/{row.id}"
    return tariff_out(row)


@router.get("", response_model=list[TariffOut], summary="List tariffs")
async def list_tariffs(service: Service) -> list[TariffOut]:
    async with service.db() as db:
        return [tariff_out(r) for r in await db.scalars(select(TariffRow).order_by(TariffRow.created_at))]


@router.get("/{tariff_id}", response_model=TariffOut, summary="Show a tariff", responses=errors(404))
async def get_tariff(tariff_id: str, service: Service) -> TariffOut:
    async with service.db() as db:
        row = await db.get(TariffRow, tariff_id)
    if row is None:
        raise Problem(404, "Tariff not found", f"no tariff {tariff_id!r}")
    return tariff_out(row)


@router.patch(
    "/{tariff_id}",
    response_model=TariffOut,
    summary="Change a tariff (new sessions use it)",
    responses=errors(404, 422),
)
async def update_tariff(tariff_id: str, body: TariffChanges, service: Service) -> TariffOut:
    async with service.db.begin() as db:
        row = await db.get(TariffRow, tariff_id)
        if row is None:
            raise Problem(404, "Tariff not found", f"no tariff {tariff_id!r}")
        tariff = _validated({**row.definition, **_changes(body)})
        row.definition = tariff.to_dict()
        row.name = tariff.name
    return tariff_out(row)
