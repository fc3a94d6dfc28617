"""/api/v1/payers: drivers or fleets whose id tags (RFID cards, AutoCharge vehicle ids) start sessions
they pay for. The payer's token, shown once at creation, lets its car node follow those sessions."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from csms.api.access import digest, new_token
from csms.api.auth import require_operator
from csms.api.deps import service_of
from csms.api.document import errors
from csms.api.problems import Problem
from csms.api.schemas import Strict
from csms.charging.service import ChargingService
from csms.db.models import IdTag, Payer

router = APIRouter(
    prefix="/api/v1/payers", tags=["payers"], dependencies=[Depends(require_operator)], responses=errors(401)
)
Service = Annotated[ChargingService, Depends(service_of)]

IdTagText = Annotated[str, Field(min_length=1, max_length=36, pattern=r"^[\x21-\x7e]+$")]


class PayerCreate(Strict):
    name: str = Field(min_length=1, max_length=100)
    id_tags: list[IdTagText] = Field(default_factory=list, max_length=100)


class PayerOut(BaseModel):
    id: str
    name: str
    id_tags: list[str]
    created_at: datetime


class PayerCreated(PayerOut):
    token: str = Field(description="The payer's secret token; shown only now.")


async def _tags_of(service: ChargingService, payer_id: str) -> list[str]:
    async with service.db() as db:
        return sorted(await db.scalars(select(IdTag.id_tag).where(IdTag.payer_id == payer_id)))


@router.post(
    "",
    status_code=201,
    response_model=PayerCreated,
    summary="Create a payer with its id tags",
    responses=errors(409, 422),
)
async def create_payer(body: PayerCreate, service: Service, response: Response) -> PayerCreated:
    token = new_token("pt_")
    payer = Payer(id="p_" + secrets.token_hex(6), name=body.name, token_hash=digest(token))
    async with service.db.begin() as db:
        db.add(payer)
        await db.flush()
        for id_tag in dict.fromkeys(body.id_tags):
            tag = await db.get(IdTag, id_tag)
            if tag is not None and tag.payer_id is not None:
                raise Problem(409, "Id tag taken", f"id tag {id_tag!r} belongs to another payer")
            if tag is None:
                db.add(IdTag(id_tag=id_tag, status="Accepted", payer_id=payer.id))
            else:
                tag.payer_id = payer.id
    response.headers["Location"] = f"/api/v1/payers/{payer.id}"
    return PayerCreated(
        id=payer.id,
        name=payer.name,
        id_tags=await _tags_of(service, payer.id),
        created_at=payer.created_at,
        token=token,
    )


@router.get("", response_model=list[PayerOut], summary="List payers")
async def list_payers(service: Service) -> list[PayerOut]:
    async with service.db() as db:
        payers = list(await db.scalars(select(Payer).order_by(Payer.created_at)))
    return [
        PayerOut(id=p.id, name=p.name, id_tags=await _tags_of(service, p.id), created_at=p.created_at)
        for p in payers
    ]


@router.get("/{payer_id}", response_model=PayerOut, summary="Show a payer", responses=errors(404))
async def get_payer(payer_id: str, service: Service) -> PayerOut:
    async with service.db() as db:
        payer = await db.get(Payer, payer_id)
    if payer is None:
        raise Problem(404, "Payer not found", f"no payer {payer_id!r}")
    return PayerOut(
        id=payer.id, name=payer.name, id_tags=await _tags_of(service, payer.id), created_at=payer.created_at
    )
