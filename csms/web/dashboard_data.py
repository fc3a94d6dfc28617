"""What the operator dashboard shows, gathered once for all its viewers.

Today's totals, charts and recent invoices and cuts come from the session event log (``session_events``),
read incrementally: each refresh reads only the events after the last one it saw (by primary key, at
most ``CHUNK`` at a time), so a busy day costs each refresh the same small read. Chargers and the active
sessions are read as they are now.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from csms.api.sessions import SessionOut, session_out
from csms.charging.service import ChargingService
from csms.db.models import Charger, ChargingSession, Connector, LightningInvoice, SessionEvent, Settlement
from csms.ocpp.registry import ConnectionRegistry

BUCKET_S = 10
CHUNK = 20_000
RECENT = 10
MAX_SESSIONS = 50
MAX_CHARGERS = 500
REFRESH_S = 1.5


@dataclass
class ChargerRow:
    id: str
    online: bool
    protocol: str | None
    last_seen: datetime | None
    connectors: list[tuple[int, str]]
    active_sessions: dict[int, str]  # connector -> session id


@dataclass
class RecentEvent:
    id: int
    kind: str
    session_number: int
    data: dict[str, Any]
    at: datetime
    session_id: str = ""
    charger_id: str = ""
    connector_id: int | None = None
    status: str = ""


@dataclass
class Today:
    """Today's (UTC) figures, accumulated from the event log."""

    day: datetime
    cursor: int = 0
    energy_wh: int = 0
    billed_msat: int = 0
    paid_msat: int = 0
    refunded_msat: int = 0  # paid back to drivers' wallets (LNURL-withdraw), routing fees apart
    deposits_msat: int = 0  # hold-invoice deposits offered (held, then canceled or settled)
    sessions: set[int] = field(default_factory=set)
    last_energy: dict[int, int] = field(default_factory=dict)
    energy_buckets: dict[int, int] = field(default_factory=dict)  # bucket start (unix s) -> Wh
    paid_buckets: dict[int, int] = field(default_factory=dict)  # bucket start -> msat
    invoices: deque[RecentEvent] = field(default_factory=lambda: deque(maxlen=RECENT))
    cuts: deque[RecentEvent] = field(default_factory=lambda: deque(maxlen=RECENT))

    def take(self, event: SessionEvent) -> None:
        self.cursor = event.id
        at = event.created_at if event.created_at.tzinfo else event.created_at.replace(tzinfo=UTC)
        if at < self.day:
            return
        bucket = int(at.timestamp()) // BUCKET_S * BUCKET_S
        data = event.data or {}
        number = event.session_number
        if event.kind in ("started", "meter", "ended") and isinstance(data.get("energy_wh"), int):
            energy = data["energy_wh"]
            previous = self.last_energy.get(number, 0 if event.kind == "started" else None)
            self.last_energy[number] = energy
            if event.kind == "ended":
                self.last_energy.pop(number, None)
            self.sessions.add(number)
            if previous is not None and energy > previous:
                self.energy_wh += energy - previous
                self.energy_buckets[bucket] = self.energy_buckets.get(bucket, 0) + energy - previous
        elif event.kind == "invoice" and data.get("kind") == "deposit":
            self.deposits_msat += int(data.get("amount_msat") or 0)  # a deposit is not billed energy
            self.invoices.appendleft(RecentEvent(event.id, event.kind, number, data, at))
        elif event.kind == "refunded":
            self.refunded_msat += int(data.get("amount_msat") or 0)
        elif event.kind == "invoice":
            self.billed_msat += int(data.get("amount_msat") or 0)
            self.invoices.appendleft(RecentEvent(event.id, event.kind, number, data, at))
        elif event.kind == "paid":
            amount = int(data.get("amount_msat") or 0)
            self.paid_msat += amount
            self.paid_buckets[bucket] = self.paid_buckets.get(bucket, 0) + amount
        elif event.kind in ("suspended", "stopping"):
            self.cuts.appendleft(RecentEvent(event.id, event.kind, number, data, at))

    def series(self, buckets: dict[int, int], now: float) -> list[tuple[float, float]]:
        """The running total over the day: one point per bucket with data, and now."""
        total, points = 0, []
        for start in sorted(buckets):
            if not points:
                points.append((float(start), 0.0))
            total += buckets[start]
            points.append((float(start + BUCKET_S), float(total)))
        if points:
            points.append((max(now, points[-1][0]), float(total)))
        return points


@dataclass
class Snapshot:
    at: datetime
    chargers: list[ChargerRow]
    sessions: list[SessionOut]
    invoices: list[RecentEvent]
    cuts: list[RecentEvent]
    energy_wh: int
    billed_msat: int
    paid_msat: int
    refunded_msat: int
    deposits_msat: int
    sessions_today: int
    energy_series: list[tuple[float, float]]
    paid_series: list[tuple[float, float]]
    node: dict[str, Any]


def midnight(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class DashboardData:
    """The dashboard's figures, refreshed at most every ``REFRESH_S`` whoever asks."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.today: Today | None = None
        self.lock = asyncio.Lock()
        self.snapshot: Snapshot | None = None
        self.fresh_until = 0.0

    @property
    def service(self) -> ChargingService:
        return self.app.state.service  # type: ignore[no-any-return]

    async def get(self) -> Snapshot:
        async with self.lock:
            if self.snapshot is None or time.monotonic() >= self.fresh_until:
                self.snapshot = await self._build()
                self.fresh_until = time.monotonic() + REFRESH_S
            return self.snapshot

    async def _first_event_of(self, day: datetime) -> int:
        """The id just before the day's first event (ids grow with time): a binary search by primary key."""
        async with self.service.db() as db:
            low = await db.scalar(select(func.min(SessionEvent.id))) or 0
            high = await db.scalar(select(func.max(SessionEvent.id))) or 0
            if high == 0:
                return 0
            low -= (
                1  # invariant: the event at ``low`` (if any) is before the day; the one at ``high`` maybe not
            )
            while high - low > 1:
                middle = (low + high) // 2
                at = await db.scalar(
                    select(SessionEvent.created_at)
                    .where(SessionEvent.id >= middle)
                    .order_by(SessionEvent.id)
                    .limit(1)
                )
                if at is not None and (at if at.tzinfo else at.replace(tzinfo=UTC)) < day:
                    low = middle
                else:
                    high = middle
            return max(low, 0)

    async def _read_events(self, now: datetime) -> Today:
        day = midnight(now)
        if self.today is None or self.today.day != day:
            self.today = Today(day=day, cursor=await self._first_event_of(day))
        today = self.today
        async with self.service.db() as db:
            rows = list(
                await db.scalars(
                    select(SessionEvent)
                    .where(SessionEvent.id > today.cursor)
                    .order_by(SessionEvent.id)
                    .limit(CHUNK)
                )
            )
        for row in rows:
            today.take(row)
        return today

    async def _describe(self, events: list[RecentEvent]) -> list[RecentEvent]:
        numbers = {e.session_number for e in events}
        keys = [e.data.get("key") for e in events if e.kind == "invoice" and e.data.get("key")]
        if not numbers:
            return events
        async with self.service.db() as db:
            sessions = {
                s.number: s
                for s in await db.scalars(select(ChargingSession).where(ChargingSession.number.in_(numbers)))
            }
            found = (
                await db.execute(
                    select(LightningInvoice.key, LightningInvoice.status).where(
                        LightningInvoice.key.in_(keys)
                    )
                )
                if keys
                else None
            )
            statuses: dict[str, str] = {key: status for key, status in found} if found is not None else {}
        for event in events:
            session = sessions.get(event.session_number)
            if session is not None:
                event.session_id, event.charger_id = session.id, session.charger_id
                event.connector_id = session.connector_id
            event.status = statuses.get(event.data.get("key", ""), "")
        return events

    async def _build(self) -> Snapshot:
        now = datetime.now(UTC)
        today = await self._read_events(now)
        registry: ConnectionRegistry = self.app.state.registry
        async with self.service.db() as db:
            chargers = list(
                await db.scalars(
                    select(Charger)
                    .where(Charger.registered.is_(True))
                    .order_by(Charger.id)
                    .limit(MAX_CHARGERS)
                )
            )
            connectors = list(
                await db.scalars(
                    select(Connector).where(
                        Connector.charger_id.in_([c.id for c in chargers]), Connector.connector_id >= 1
                    )
                )
            )
            active = (
                await db.execute(
                    select(ChargingSession, Settlement)
                    .outerjoin(Settlement, Settlement.session_number == ChargingSession.number)
                    .where(ChargingSession.ended_at.is_(None), ChargingSession.state != "ended")
                    .order_by(ChargingSession.number.desc())
                    .limit(MAX_SESSIONS)
                )
            ).all()
        sessions = [session_out(s, t) for s, t in active]
        by_charger: dict[str, list[Connector]] = {}
        for connector in connectors:
            by_charger.setdefault(connector.charger_id, []).append(connector)
        running: dict[str, dict[int, str]] = {}
        for s in sessions:
            if s.connector_id is not None:
                running.setdefault(s.charger_id, {})[s.connector_id] = s.id
        rows = []
        where = await registry.all_whereabouts()  # in cluster mode: every process's chargers
        for charger in chargers:
            live = registry.get(charger.id)
            place = where.get(charger.id)
            last = charger.last_message_at
            if live is not None and (last is None or live.last_message_at > last):
                last = live.last_message_at
            rows.append(
                ChargerRow(
                    id=charger.id,
                    online=place is not None and place.connected,  # here, or held by another process
                    protocol=place.protocol if place is not None else charger.protocol,
                    last_seen=last,
                    connectors=[
                        (c.connector_id, c.status)
                        for c in sorted(by_charger.get(charger.id, []), key=lambda c: c.connector_id)
                    ],
                    active_sessions=running.get(charger.id, {}),
                )
            )
        invoices = await self._describe([*today.invoices])
        cuts = await self._describe([*today.cuts])
        stamp = now.timestamp()
        paid_series = [(t, v / 1000) for t, v in today.series(today.paid_buckets, stamp)]
        energy_series = [(t, v / 1000) for t, v in today.series(today.energy_buckets, stamp)]
        return Snapshot(
            at=now,
            chargers=rows,
            sessions=sessions,
            invoices=invoices,
            cuts=cuts,
            energy_wh=today.energy_wh,
            billed_msat=today.billed_msat,
            paid_msat=today.paid_msat,
            refunded_msat=today.refunded_msat,
            deposits_msat=today.deposits_msat,
            sessions_today=len(today.sessions),
            energy_series=energy_series,
            paid_series=paid_series,
            node=self._node(),
        )

    def _node(self) -> dict[str, Any]:
        state = self.app.state
        node = getattr(state, "lightning", None)
        settlement = getattr(state, "settlement", None)
        if node is None:
            return {"backend": state.settings.lightning_backend, "reachable": False, "detail": "not started"}
        health = node.backend.health
        return {
            "backend": state.settings.lightning_backend,
            "reachable": health.reachable,
            "invoice_stream": bool(settlement and settlement.stream_connected.is_set()),
            "consecutive_failures": health.consecutive_failures,
            "last_error": health.last_error,
            "open_settlements": settlement.open_count if settlement is not None else 0,
            "address": node.simnet.address if node.simnet is not None else None,
        }


def since(at: datetime | None, now: datetime) -> str:
    """How long ago, briefly: 4 s, 3 min, 2 h."""
    if at is None:
        return "never"
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    seconds = max(0, int((now - at) / timedelta(seconds=1)))
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 5400:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"
