"""What the owner of a charger does for a request that reached another process: sell a walk-up or
prepaid session, top up a prepaid one, or call off a paid session whose transaction has not started."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from csms.charging.service import ChargingService
from csms.cluster.link import ClusterLink, RemoteFailure
from csms.db.models import ChargingSession, Settlement
from csms.ocpp.registry import ConnectionRegistry
from csms.settlement.engine import SettlementEngine
from csms.settlement.session import record_transaction_ended


class OwnerSessions:
    def __init__(
        self,
        link: ClusterLink,
        registry: ConnectionRegistry,
        engine: SettlementEngine,
        service: ChargingService,
    ) -> None:
        self.registry = registry
        self.engine = engine
        self.service = service
        link.handle("walk_up", self._walk_up)
        link.handle("stop_pending", self._stop_pending)
        link.handle("prepay", self._prepay)
        link.handle("top_up", self._top_up)

    async def _walk_up(self, payload: dict[str, Any]) -> int:
        charger_id = payload["charger"]
        if self.registry.get(charger_id) is None:
            raise RemoteFailure("not_connected", f"charger {charger_id} is not connected")
        session = await self.engine.open_walk_up(charger_id, int(payload["connector"]), payload["token"])
        return session.number

    async def _prepay(self, payload: dict[str, Any]) -> int:
        """An LNURL-pay prepayment (csms.api.lnurl) that reached another process."""
        charger_id = payload["charger"]
        if self.registry.get(charger_id) is None:
            raise RemoteFailure("not_connected", f"charger {charger_id} is not connected")
        session, _token = await self.engine.open_prepaid(
            charger_id,
            int(payload["connector"]),
            int(payload["amount_msat"]),
            bytes.fromhex(payload["description_hash"]),
        )
        return int(session.number)

    async def _top_up(self, payload: dict[str, Any]) -> str:
        """A top-up (session page, API or LNURL-pay: csms.api.sessions.top_up) that reached another
        process; the new invoice's key (the invoice is at the node when this answers)."""
        hash_hex = payload["description_hash"]
        try:
            return await self.engine.top_up(
                int(payload["session"]),
                int(payload["amount_msat"]),
                bytes.fromhex(hash_hex) if hash_hex else None,
            )
        except ValueError as exc:
            raise RemoteFailure("ended", str(exc)) from None

    async def _stop_pending(self, payload: dict[str, Any]) -> None:
        async with self.service.db() as db:
            number = await db.scalar(
                select(ChargingSession.number).where(ChargingSession.id == payload["session"])
            )
            sold = number is not None and await db.get(Settlement, number) is not None
        if number is None:
            raise RemoteFailure("invalid", f"no session {payload['session']!r}")
        if sold:
            at = datetime.now(UTC)
            await self.engine.advance(number, lambda state: record_transaction_ended(state, at))
        await self.service.abandon_pending_session(payload["session"], "stopped before start")
