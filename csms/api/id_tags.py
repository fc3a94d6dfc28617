"""/api/v1/id-tags: RFID cards and vehicle ids that may start a charge at a charger."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select

from csms.api.auth import require_operator
from csms.api.deps import service_of
from csms.api.document import errors
from csms.api.problems import Problem
from csms.api.schemas import IdTagCreate, IdTagOut
from csms.charging.service import ChargingService
from csms.db.models import IdTag

router = APIRouter(
    prefix="/api/v1/id-tags",
    tags=["id tags"],
    dependencies=[Depends(require_operator)],
    responses=errors(401),
)
Service = Annotated[ChargingService, Depends(service_of)]


@router.post(
    "",
    status_code=201,
    response_model=IdTagOut,
    summary="Register or update an id tag",
    responses=errors(422),
)
async def put_id_tag(body: IdTagCreate, service: Service) -> IdTagOut:
    async with service.db.begin() as db:
        tag = await db.get(IdTag, body.id_tag)
        if tag is None:
            tag = IdTag(id_tag=body.id_tag)
            db.add(tag)
        tag.status = body.status
        tag.expires_at = body.expires_at
        tag.parent_id_tag = body.parent_id_tag
        await db.flush()
        return IdTagOut.model_validate(tag, from_attributes=True)


@router.get("", response_model=list[IdTagOut], summary="List id tags")
async def list_id_tags(service: Service) -> list[IdTagOut]:
    async with service.db() as db:
        return [IdTagOut.model_validate(t, from_attributes=True) for t in await db.scalars(select(IdTag))]


@router.delete("/{id_tag}", status_code=204, summary="Forget an id tag", responses=errors(404))
async def delete_id_tag(id_tag: str, service: Service) -> Response:
    async with service.db.begin() as db:
        tag = await db.get(IdTag, id_tag)
        if tag is None:
            raise Problem(404, "Id tag not found", f"no id tag {id_tag!r}")
        await db.delete(tag)
    return Response(status_code=204)
