"""A process's part in a cluster, put together: the link, the registry, the event log, the owner's
request handlers and the invoice-stream lease (what :func:`csms.app.create_app` uses in cluster mode)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from csms.charging.service import ChargingService
from csms.cluster.events import ClusterEventLog
from csms.cluster.link import ClusterLink
from csms.cluster.payments import ClusterPayments
from csms.cluster.registry import ClusterRegistry
from csms.cluster.sessions import OwnerSessions
from csms.settlement.engine import SettlementEngine


class Cluster:
    def __init__(self, url: str, name: str, lease_s: float) -> None:
        self.link = ClusterLink(url, name, lease_s)
        self._registry: ClusterRegistry | None = None
        self._events: ClusterEventLog | None = None
        self.payments: ClusterPayments | None = None

    def registry(self, call_timeout_s: float) -> ClusterRegistry:
        self._registry = ClusterRegistry(self.link, call_timeout_s)
        return self._registry

    def event_log(self, sessionmaker: async_sessionmaker[AsyncSession]) -> ClusterEventLog:
        self._events = ClusterEventLog(sessionmaker, self.link)
        return self._events

    def describe(self) -> str:
        return f"{self.link.cluster!r} over NATS {self.link.url}, this process is {self.link.process_id}"

    async def join(self) -> None:
        await self.link.start()
        assert self._events is not None and self._registry is not None
        await self._registry.ownership.start()
        await self._events.start()

    def attach(self, engine: SettlementEngine, service: ChargingService) -> None:
        """Settlement is running: claim and release chargers with it, serve the owner's requests, and
        compete for the invoice stream."""
        registry = self._registry
        assert registry is not None

        async def released(charger_id: str) -> None:
            await engine.release(charger_id)
            service.forget(charger_id)

        async def claimed(charger_id: str) -> None:
            service.forget(charger_id)  # anything left from an earlier ownership: the log is the truth
            await engine.adopt(charger_id)

        registry.on_claimed = claimed
        registry.on_released = released
        OwnerSessions(self.link, registry, engine, service)
        self.payments = ClusterPayments(self.link, registry, engine)
        self.payments.start()

    async def leave_leadership(self) -> None:
        if self.payments is not None:
            await self.payments.stop()

    async def leave(self) -> None:
        if self._registry is not None:
            await self._registry.ownership.stop()
        if self._events is not None:
            await self._events.stop()
        await self.link.stop()

    async def health(self) -> dict[str, Any]:
        leader = await self.payments.lease.holder() if self.payments is not None else None
        return {
            "name": self.link.cluster,
            "process": self.link.process_id,
            "members": await self.link.members(),
            "invoice_stream_leader": leader,
            "owned_chargers": len(self._registry.ownership.held()) if self._registry else 0,
        }
