"""/api/v1/sessions: satwatt's record of each charge, with its energy and meter series."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from csms.api.auth import require_operator
from csms.api.deps import service_of
from csms.api.problems import Problem
from csms.api.schemas import MeterPoint, SessionDetail, SessionOut
from csms.charging.service import ChargingService
from csms.db.models import ChargingSession, MeterSample

router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"], dependencies=[Depends(require_operator)])
Service = Annotated[ChargingService, Depends(service_of)]

STATES = ("pending", "charging", "ended")


def session_out(session: ChargingSession) -> SessionOut:
    return SessionOut.model_validate(session, from_attributes=True)


def meter_point(session: ChargingSession, sample: MeterSample) -> MeterPoint:
    delivered = None
    if sample.energy_register_wh is not None and session.meter_start_wh is not None:
        delivered = max(0, sample.energy_register_wh - session.meter_start_wh)
    return MeterPoint(
        timestamp=sample.timestamp,
        energy_wh=delivered,
        power_w=sample.power_w,
        soc_percent=sample.soc_percent,
        context=sample.context,
        after_end=sample.after_end,
    )


@router.get("", response_model=list[SessionOut], summary="List sessions, newest first")
async def list_sessions(
    service: Service,
    charger_id: str | None = None,
    state: Annotated[str | None, Query(description="One of: " + ", ".join(STATES))] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[SessionOut]:
    if state is not None and state not in STATES:
        raise Problem(
            422,
            "Invalid request",
            f"state: must be one of {', '.join(STATES)}",
            errors=[{"field": "state", "message": f"must be one of {', '.join(STATES)}"}],
        )
    query = select(ChargingSession).order_by(ChargingSession.number.desc()).limit(limit).offset(offset)
    if charger_id is not None:
        query = query.where(ChargingSession.charger_id == charger_id)
    if state is not None:
        query = query.where(ChargingSession.state == state)
    async with service.db() as db:
        return [session_out(s) for s in await db.scalars(query)]


@router.get("/{session_id}", response_model=SessionDetail, summary="Show a session with its meter series")
async def get_session(session_id: str, service: Service) -> SessionDetail:
    async with service.db() as db:
        session = await db.scalar(select(ChargingSession).where(ChargingSession.id == session_id))
        if session is None:
            raise Problem(404, "Session not found", f"no session with id {session_id!r}")
        samples = await db.scalars(
            select(MeterSample)
            .where(MeterSample.session_number == session.number)
            .order_by(MeterSample.timestamp, MeterSample.id)
        )
        series = [meter_point(session, s) for s in samples]
    return SessionDetail(**session_out(session).model_dump(), meter_series=series)
