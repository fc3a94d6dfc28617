"""The group-commit writer against a real database (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, event, insert, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from csms.db.engine import create_writer_engine, dispose
from csms.db.models import Charger, ChargingSession, SessionEvent
from csms.db.writer import GroupCommitWriter, Unit

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CHARGERS = Charger.__table__
SESSIONS = ChargingSession.__table__
EVENTS = SessionEvent.__table__
INSERT_CHARGER = insert(CHARGERS)
INSERT_SESSION = insert(SESSIONS)
INSERT_EVENT = insert(EVENTS)
SET_ENERGY = (
    update(SESSIONS).where(SESSIONS.c.number == bindparam("b_number")).values(energy_wh=bindparam("e"))
)


def charger_row(charger_id: str) -> dict[str, object]:
    return {"id": charger_id, "registered": True, "lenient": False, "connected": False, "created_at": NOW}


def session_row(number: int, charger_id: str = "W-1") -> dict[str, object]:
    return {
        "number": number,
        "id": f"s{number}",
        "charger_id": charger_id,
        "state": "charging",
        "energy_wh": 0,
        "offline_events": 0,
        "created_at": NOW,
        "updated_at": NOW,
    }


@pytest.fixture
async def writer(database_url: str) -> AsyncIterator[GroupCommitWriter]:
    engine = create_writer_engine(database_url)
    writer = GroupCommitWriter(engine)
    await writer.start()
    first = Unit()
    first.add(INSERT_CHARGER, charger_row("W-1"))
    await writer.commit(first)
    try:
        yield writer
    finally:
        await writer.close()
        await dispose(engine)


async def read(database_url: str, query: str) -> list[tuple[object, ...]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return [tuple(r) for r in await connection.execute(text(query))]
    finally:
        await engine.dispose()


async def test_units_queued_together_commit_in_one_transaction(
    writer: GroupCommitWriter, database_url: str
) -> None:
    """Units handed over while the writer is busy share the next transaction; the parent row of one
    unit is inserted before another unit's child rows and updates, whatever order they came in."""
    units = []
    for number in (1, 2, 3):
        unit = Unit()
        unit.add(INSERT_SESSION, session_row(number))
        unit.add(INSERT_EVENT, {"session_number": number, "kind": "started", "data": {}, "created_at": NOW})
        unit.add(SET_ENERGY, {"b_number": number, "e": number * 10}, key=number)
        units.append(unit)
    # a later unit that updates session 1 again: coalesced, the last value wins
    again = Unit()
    again.add(SET_ENERGY, {"b_number": 1, "e": 99}, key=1)
    batches_before = writer.stats.batches
    await asyncio.gather(*(writer.commit(u) for u in [*units, again]))
    assert writer.stats.batches - batches_before == 1
    rows = await read(database_url, "SELECT number, energy_wh FROM sessions ORDER BY number")
    assert rows == [(1, 99), (2, 20), (3, 30)]
    assert (await read(database_url, "SELECT count(*) FROM session_events"))[0][0] == 3


async def test_a_bad_unit_fails_alone(writer: GroupCommitWriter, database_url: str) -> None:
    good, bad, also_good = Unit(), Unit(), Unit()
    good.add(INSERT_SESSION, session_row(10))
    bad.add(INSERT_SESSION, session_row(11, charger_id="NO-SUCH-CHARGER"))  # breaks a foreign key
    also_good.add(INSERT_SESSION, session_row(12))
    results = await asyncio.gather(
        writer.commit(good), writer.commit(bad), writer.commit(also_good), return_exceptions=True
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], Exception)
    assert await read(database_url, "SELECT number FROM sessions ORDER BY number") == [(10,), (12,)]


async def test_barrier_waits_for_what_was_handed_over(writer: GroupCommitWriter, database_url: str) -> None:
    unit = Unit()
    unit.add(INSERT_SESSION, session_row(20))
    pending = writer.commit(unit)
    await writer.barrier()
    assert pending.done()
    assert await read(database_url, "SELECT number FROM sessions") == [(20,)]


async def test_sqlite_writer_waits_for_another_writer_without_blocking_the_loop(
    writer: GroupCommitWriter, database_url: str
) -> None:
    """A REST API transaction holds SQLite's write lock and needs the event loop to finish: the writer
    (which runs in the loop's thread) must not block the loop while it waits for the lock."""
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's file lock")
    other = create_async_engine(database_url)
    try:
        async with other.connect() as connection:
            await connection.exec_driver_sql("BEGIN IMMEDIATE")
            await connection.execute(INSERT_SESSION, session_row(30))
            unit = Unit()
            unit.add(INSERT_SESSION, session_row(31))
            pending = writer.commit(unit)
            await asyncio.sleep(0.05)  # the writer has tried and found the lock taken
            assert not pending.done()
            await connection.commit()  # possible only because the loop kept running
            await asyncio.wait_for(pending, 5)
    finally:
        await other.dispose()
    assert await read(database_url, "SELECT number FROM sessions ORDER BY number") == [(30,), (31,)]


async def test_rows_of_one_statement_are_written_with_one_executemany(
    writer: GroupCommitWriter, database_url: str
) -> None:
    engine = writer.engine
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    calls: list[tuple[str, bool]] = []

    def count(
        _conn: object, _cursor: object, statement: str, _params: object, _ctx: object, many: bool
    ) -> None:
        calls.append((statement.split()[0].upper(), many))

    event.listen(sync_engine, "before_cursor_execute", count)
    try:
        unit = Unit()
        for number in range(40, 140):
            unit.add(INSERT_SESSION, session_row(number))
        await writer.commit(unit)
    finally:
        event.remove(sync_engine, "before_cursor_execute", count)
    assert [c for c in calls if c[0] == "INSERT"] == [("INSERT", True)]
    count_rows = (await read(database_url, "SELECT count(*) FROM sessions WHERE number >= 40"))[0][0]
    assert count_rows == 100
