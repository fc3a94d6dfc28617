"""Group commit: one writer per process puts every fact into the database, many facts per transaction.

Callers build a :class:`Unit` (the statements that record one fact: a meter sample, the session's new
totals, its settlement state and events...), hand it to :meth:`GroupCommitWriter.commit` and await it.
The writer takes every unit queued while the previous transaction ran, executes them in ONE
transaction and resolves each caller's await when it has committed; so a charger is answered only once
what it said is durable, and a thousand chargers cost a handful of transactions per second instead of
a thousand.

Within a batch, rows are grouped by statement and each group runs as one ``executemany`` (SQLAlchemy
Core). Groups run parent tables first, and on each table inserts before updates (see ``_plan``), so a
session is inserted before its samples refer to it; rows with the same ``key`` (the latest snapshot of
one session, say) are coalesced, the last one winning. When a batch fails, each of its units is retried
in a transaction of its own, so one bad fact fails only its own caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Insert, MetaData, Table
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

log = logging.getLogger("csms.db.writer")

LOCK_PATIENCE_S = 30.0


def _is_locked(exc: OperationalError) -> bool:
    message = str(exc.orig).lower()
    return "locked" in message or "busy" in message


Params = dict[str, Any]


@dataclass(slots=True)
class _Row:
    statement: Executable
    params: Params
    key: Hashable | None
    late: bool


@dataclass
class Unit:
    """The statements recording one fact, committed together (and with other units) or not at all."""

    rows: list[_Row] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def add(
        self, statement: Executable, params: Params, *, key: Hashable | None = None, late: bool = False
    ) -> None:
        """Stage ``statement`` with ``params``. Rows with the same statement and ``key`` coalesce: only
        the last one staged in a batch is written (for snapshots of a row that changes often). A
        ``late`` update runs after the other updates of its table in the batch (it refines them)."""
        self.rows.append(_Row(statement, params, key, late))

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (synchronously, in the writer's task) once this unit has committed."""
        self.after_commit.append(callback)

    def __bool__(self) -> bool:
        return bool(self.rows)


@dataclass
class WriterStats:
    batches: int = 0
    units: int = 0
    rows: int = 0
    failed_batches: int = 0
    failed_units: int = 0
    last_batch_ms: float = 0.0


@functools.cache
def _table_order(metadata: MetaData) -> dict[str, int]:
    return {table.name: index for index, table in enumerate(metadata.sorted_tables)}


def _rank(statement: Executable, late: bool) -> tuple[int, int, int]:
    """Where a statement's group goes in a batch: parent tables before the tables that refer to them,
    on each table inserts before updates, and ``late`` updates after the others."""
    table = getattr(statement, "table", None)
    if not isinstance(table, Table):
        return (-1, 0, 0)
    kind = 0 if isinstance(statement, Insert) else 1
    return (_table_order(table.metadata).get(table.name, -1), kind, int(late))


def _plan(units: list[Unit]) -> list[tuple[Executable, list[Params]]]:
    """Group the rows of ``units`` by statement, ordered by :func:`_rank` (then by first appearance).

    This keeps every causal order a batch can hold: a row is inserted before it is updated or referred
    to, and the rows of one statement run in the order they were staged, the last of a ``key`` winning.
    """
    groups: dict[int, tuple[Executable, list[Params], dict[Hashable, int], tuple[int, int, int, int]]] = {}
    for unit in units:
        for row in unit.rows:
            sid = id(row.statement)
            group = groups.get(sid)
            if group is None:
                group = groups[sid] = (row.statement, [], {}, (*_rank(row.statement, row.late), len(groups)))
            _, params, by_key, _ = group
            if row.key is None:
                params.append(row.params)
            elif (index := by_key.get(row.key)) is not None:
                params[index] = row.params
            else:
                by_key[row.key] = len(params)
                params.append(row.params)
    ordered = sorted(groups.values(), key=lambda group: group[3])
    return [(statement, params) for statement, params, _, _ in ordered]


def _execute_units(connection: Connection, units: list[Unit]) -> int:
    rows = 0
    for statement, params in _plan(units):
        connection.execute(statement, params if len(params) > 1 else params[0])
        rows += len(params)
    return rows


class GroupCommitWriter:
    """The process's one writer of facts (see the module docstring)."""

    def __init__(self, engine: AsyncEngine | Engine, *, max_units: int = 500) -> None:
        """``engine``: an async engine (PostgreSQL: asyncpg pipelines each executemany), or a sync
        engine (SQLite), whose batches run right in the event loop's thread. A batch of SQLite work is
        short (a thousand rows and a commit to the WAL take about a millisecond) and a thread costs more
        than it saves: each time the writer thread let go of the GIL (in every execute and the commit)
        it waited for the busy event loop to give it back, up to the 5 ms switch interval each time,
        which made batches slow and messages wait (measured: 0.54 ms of CPU and 700 messages/s with
        the thread, 0.40 ms and 1,700 messages/s inline; see docs/adr/0001)."""
        self.engine = engine
        self.max_units = max_units
        self.stats = WriterStats()
        self._queue: list[tuple[Unit, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._busy = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit-writer")

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def commit(self, unit: Unit) -> asyncio.Future[None]:
        """Queue ``unit``; the returned future resolves once it has committed (or fails with the error
        that kept it from committing). An empty unit resolves at once."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not unit:
            for callback in unit.after_commit:
                callback()
            future.set_result(None)
            return future
        if self._task is None or self._closing:
            future.set_exception(RuntimeError("the database writer is not running"))
            return future
        self._queue.append((unit, future))
        self._wakeup.set()
        return future

    async def barrier(self) -> None:
        """Wait until everything handed to the writer so far has committed (before reading back from
        the database something that memory no longer holds)."""
        if self._task is None or (not self._queue and not self._busy):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((Unit(), future))
        self._wakeup.set()
        await future

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch, self._queue = self._queue[: self.max_units], self._queue[self.max_units :]
            started = time.perf_counter()
            self._busy = True
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(RuntimeError("the database writer stopped"))
                raise
            finally:
                self._busy = False
            self.stats.last_batch_ms = (time.perf_counter() - started) * 1000

    async def _write(self, batch: list[tuple[Unit, asyncio.Future[None]]]) -> None:
        units = [unit for unit, _ in batch]
        try:
            rows = await self._transaction(units)
        except Exception as exc:
            self.stats.failed_batches += 1
            if len(batch) == 1:
                self._fail(batch[0], exc)
                return
            log.warning("a batch of %d facts failed (%s); writing them one by one", len(batch), exc)
            for item in batch:
                try:
                    await self._transaction([item[0]])
                except Exception as unit_exc:
                    self._fail(item, unit_exc)
                else:
                    self._done(item)
            return
        self.stats.batches += 1
        self.stats.units += len(batch)
        self.stats.rows += rows
        for item in batch:
            self._done(item)

    async def _transaction(self, units: list[Unit]) -> int:
        """Write ``units`` in one transaction; the number of rows written."""
        engine = self.engine
        if isinstance(engine, AsyncEngine):
            async with engine.begin() as connection:
                return await connection.run_sync(_execute_units, units)
        waited, attempt = 0.0, 0
        while True:
            try:
                with engine.begin() as connection:
                    return _execute_units(connection, units)
            except OperationalError as exc:
                # another connection (a REST API write) holds SQLite's write lock: let the loop run
                # so it can finish, then try again
                if not _is_locked(exc) or waited >= LOCK_PATIENCE_S:
                    raise
            attempt += 1
            delay = min(0.05, 0.001 * attempt)
            await asyncio.sleep(delay)
            waited += delay

    def _done(self, item: tuple[Unit, asyncio.Future[None]]) -> None:
        """The unit committed: its caller resumes first (a charger gets its answer before anything the
        fact set off, such as a call that cuts its power, is sent to it), then the callbacks run."""
        unit, future = item
        if not future.done():
            future.set_result(None)
        for callback in unit.after_commit:
            try:
                callback()
            except Exception:
                log.exception("a commit callback failed")

    def _fail(self, item: tuple[Unit, asyncio.Future[None]], exc: Exception) -> None:
        self.stats.failed_units += 1
        log.error("writing a fact failed: %s", exc)
        if not item[1].done():
            item[1].set_exception(exc)
