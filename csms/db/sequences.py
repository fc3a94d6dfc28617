"""Session numbers handed out without a database round trip per session.

A session's number is its primary key and the 1.6 transactionId, needed in the StartTransaction answer
before the session's row is committed (group commit). PostgreSQL hands out blocks from the column's
own sequence, so several processes never collide; SQLite is one process by design, which continues
from the largest number in the table.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from csms.db.models import ChargingSession

BLOCK = 64


class SessionNumbers:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], dialect: str) -> None:
        self.db = sessionmaker
        self.dialect = dialect
        self._free: list[int] = []
        self._next_sqlite: int | None = None
        self._lock = asyncio.Lock()

    async def take(self) -> int:
        if self.dialect == "sqlite":
            if self._next_sqlite is None:
                async with self._lock:
                    if self._next_sqlite is None:
                        async with self.db() as db:
                            largest = await db.scalar(select(func.max(ChargingSession.number)))
                        self._next_sqlite = (largest or 0) + 1
            number = self._next_sqlite
            self._next_sqlite += 1
            return number
        if not self._free:
            async with self._lock:
                if not self._free:
                    async with self.db() as db:
                        rows = await db.execute(
                            text(
                                "SELECT nextval(pg_get_serial_sequence('sessions', 'number')) "
                                "FROM generate_series(1, :n)"
                            ),
                            {"n": BLOCK},
                        )
                        self._free = sorted((row[0] for row in rows), reverse=True)
        return self._free.pop()
