"""The ordered, persisted event log of each session, and live notification of new entries.

Entries are written inside the database transaction that records the fact they describe, and readers
are woken after the commit. A reader (the server-sent event stream of a car node or a web page) asks
for entries after the last id it saw, so a reconnecting client misses nothing and sees nothing twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from csms.db.models import SessionEvent
from csms.db.writer import Unit

_INSERT = insert(SessionEvent.__table__)

# anomaly: an implausible reading, flagged with its reason and never priced (csms.charging.plausibility)
EVENT_KINDS = (
    "started", "meter", "anomaly", "invoice", "paid", "suspended", "resumed", "stopping", "ended", "closed",
    "refunded", "refund_failed",
)  # fmt: skip


def _row(session_number: int, kind: str, data: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {"session_number": session_number, "kind": kind, "data": data, "created_at": at}


@dataclass(frozen=True)
class LoggedEvent:
    id: int
    kind: str
    data: dict[str, Any]
    created_at: datetime


class SessionEventLog:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.db = sessionmaker
        self._changed: dict[int, asyncio.Event] = {}

    @staticmethod
    def stage(unit: Unit, session_number: int, kind: str, data: dict[str, Any], at: datetime) -> None:
        """Add an entry to a group-commit unit; call :meth:`notify` after it commits."""
        unit.add(_INSERT, _row(session_number, kind, data, at))

    @staticmethod
    async def add(
        db: AsyncSession, session_number: int, kind: str, data: dict[str, Any], at: datetime
    ) -> None:
        """Add an entry in ``db``'s transaction (for a fact recorded outside the group-commit writer);
        call :meth:`notify` after it commits."""
        await db.execute(_INSERT, [_row(session_number, kind, data, at)])

    def notify(self, session_number: int) -> None:
        """Wake the readers of one session (only they look at the database again)."""
        event = self._changed.pop(session_number, None)
        if event is not None:
            event.set()

    async def read(self, session_number: int, after_id: int = 0, limit: int = 500) -> list[LoggedEvent]:
        async with self.db() as db:
            rows = await db.scalars(
                select(SessionEvent)
                .where(SessionEvent.session_number == session_number, SessionEvent.id > after_id)
                .order_by(SessionEvent.id)
                .limit(limit)
            )
            return [LoggedEvent(r.id, r.kind, r.data, r.created_at) for r in rows]

    async def follow(
        self, session_number: int, after_id: int = 0, keepalive_s: float = 15.0
    ) -> AsyncIterator[LoggedEvent | None]:
        """Entries after ``after_id``, then new ones as they come; None every ``keepalive_s`` of quiet."""
        last = after_id
        while True:
            changed = self._changed.setdefault(session_number, asyncio.Event())
            events = await self.read(session_number, last)
            for event in events:
                last = event.id
                yield event
            if events:
                continue
            try:
                async with asyncio.timeout(keepalive_s):
                    await changed.wait()
            except TimeoutError:
                yield None
