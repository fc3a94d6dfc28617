"""Starting and stopping sessions from satwatt's side (the REST API and, later, settlement use it)."""

from __future__ import annotations

from sqlalchemy import select

from csms.charging import commands as cmd
from csms.charging.service import ENDED, ChargingService
from csms.db.models import ChargingSession
from csms.ocpp.registry import ConnectionRegistry


class SessionNotFound(Exception):
    pass


class SessionNotRunning(Exception):
    pass


async def remote_start(
    service: ChargingService,
    registry: ConnectionRegistry,
    charger_id: str,
    connector_id: int | None,
    power_limit_w: int | None = None,
) -> tuple[ChargingSession, cmd.CommandResult]:
    """Create the session, then ask the charger to start it; a refused start ends the session."""
    if registry.get(charger_id) is None:
        raise cmd.ChargerNotConnected(charger_id)
    session = await service.create_pending_session(charger_id, connector_id)
    try:
        result = await registry.execute(
            charger_id,
            cmd.RemoteStart(
                id_tag=session.id_tag or "",
                connector_id=connector_id,
                remote_start_id=session.remote_start_id,
                power_limit_w=power_limit_w,
            ),
        )
    except cmd.CommandFailed as exc:
        await service.abandon_pending_session(session.id, f"remote start failed: {exc.reason}")
        raise
    if result.accepted:
        service.start_accepted(session.number)
    else:
        await service.abandon_pending_session(session.id, f"remote start {result.status}")
    return session, result


async def running_session(service: ChargingService, session_id: str) -> ChargingSession:
    async with service.db() as db:
        session = await db.scalar(select(ChargingSession).where(ChargingSession.id == session_id))
    if session is None:
        raise SessionNotFound(session_id)
    if session.state == ENDED or session.ocpp_transaction_id is None:
        raise SessionNotRunning(session_id)
    return session


async def remote_stop(
    service: ChargingService, registry: ConnectionRegistry, session_id: str
) -> cmd.CommandResult:
    session = await running_session(service, session_id)
    return await registry.execute(session.charger_id, cmd.RemoteStop(session.ocpp_transaction_id or ""))
