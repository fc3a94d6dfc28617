"""/api/v1/tariffs: prices and the invoice-stream parameters chargers sell under."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from csms.api.auth import require_operator
from csms.api.deps import service_of
from csms.api.problems import Problem
from csms.charging.service import ChargingService
from csms.db.models import TariffRow
from csms.settlement.tariff import DEFAULT_TARIFF, Tariff, TariffError

router = APIRouter(prefix="/api/v1/tariffs", tags=["tariffs"], dependencies=[Depends(require_operator)])
Service = Annotated[ChargingService, Depends(service_of)]


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: str = Field(description="HH:MM local time, inclusive", examples=["17:00"])
    end: str = Field(description="HH:MM local time, exclusive (before start: crosses midnight)")
    price_msat_per_kwh: int


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    zone: str = Field(description="IANA time zone of the windows", examples=["Europe/Berlin"])
    windows: list[Window]


class TariffFields(BaseModel):
    """Any of a tariff's fields; money in msat, energy in Wh, durations in seconds."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=100)
    price_msat_per_kwh: int | None = None
    session_fee_msat: int | None = None
    increment_wh: int | None = None
    min_invoice_interval_s: int | None = None
    allowance_wh: int | None = None
    grace_s: int | None = None
    stop_after_s: int | None = None
    invoice_expiry_s: int | None = None
    schedule: Schedule | None = None


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
    schedule: Schedule | None


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


def _changes(body: TariffFields) -> dict[str, Any]:
    return body.model_dump(exclude_unset=True)


@router.post("", status_code=201, response_model=TariffOut, summary="Create a tariff")
async def create_tariff(body: TariffFields, service: Service, response: Response) -> TariffOut:
    definition = {**DEFAULT_TARIFF.to_dict(), **_changes(body)}
    if body.name is None:
        raise Problem(
            422, "Invalid tariff", "name: required", errors=[{"field": "name", "message": "required"}]
        )
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


@router.get("/{tariff_id}", response_model=TariffOut, summary="Show a tariff")
async def get_tariff(tariff_id: str, service: Service) -> TariffOut:
    async with service.db() as db:
        row = await db.get(TariffRow, tariff_id)
    if row is None:
        raise Problem(404, "Tariff not found", f"no tariff {tariff_id!r}")
    return tariff_out(row)


@router.patch("/{tariff_id}", response_model=TariffOut, summary="Change a tariff (new sessions use it)")
async def update_tariff(tariff_id: str, body: TariffFields, service: Service) -> TariffOut:
    async with service.db.begin() as db:
        row = await db.get(TariffRow, tariff_id)
        if row is None:
            raise Problem(404, "Tariff not found", f"no tariff {tariff_id!r}")
        tariff = _validated({**row.definition, **_changes(body)})
        row.definition = tariff.to_dict()
        row.name = tariff.name
    return tariff_out(row)
