"""SQLite persistence of the simnet (stdlib sqlite3): nodes, invoices, payments, block height.

Everything is loaded into memory at start. Changes are written by group commit: ``save_*`` marks a
row dirty (its state in memory is what gets written), and one transaction soon after writes every
dirty row with ``executemany``. Since the network changes its state synchronously, each commit
holds whole logical operations, and the commits come in order: a crash loses at most the last
batch, which nobody was told about, because the simnet answers a write and publishes its events
only after ``await store.committed()`` / ``store.after_commit(...)``. A restart keeps invoices,
indexes and balances exactly, like LND's database.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

log = logging.getLogger("lightning.simnet")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY, privkey BLOB NOT NULL, root_key BLOB NOT NULL,
    balance_msat INTEGER NOT NULL, add_index INTEGER NOT NULL, settle_index INTEGER NOT NULL,
    payment_index INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS invoices (
    node TEXT NOT NULL, r_hash BLOB NOT NULL, preimage BLOB, value_msat INTEGER NOT NULL,
    memo TEXT NOT NULL, payment_request TEXT NOT NULL, payment_addr BLOB NOT NULL,
    creation_date INTEGER NOT NULL, expiry INTEGER NOT NULL, cltv_expiry INTEGER NOT NULL,
    add_index INTEGER NOT NULL, settle_index INTEGER NOT NULL, state INTEGER NOT NULL,
    settle_date INTEGER NOT NULL, amt_paid_msat INTEGER NOT NULL, is_hold INTEGER NOT NULL,
    htlc_payer TEXT, htlc_amt_msat INTEGER NOT NULL, htlc_accept_time INTEGER NOT NULL,
    htlc_accept_height INTEGER NOT NULL, htlc_expiry_height INTEGER NOT NULL,
    htlc_resolve_time INTEGER NOT NULL, htlc_state INTEGER NOT NULL,
    PRIMARY KEY (node, r_hash)
);
CREATE TABLE IF NOT EXISTS payments (
    node TEXT NOT NULL, payment_hash BLOB NOT NULL, payment_request TEXT NOT NULL,
    dest TEXT, value_msat INTEGER NOT NULL, fee_msat INTEGER NOT NULL, status INTEGER NOT NULL,
    failure_reason INTEGER NOT NULL, preimage BLOB, creation_time_ns INTEGER NOT NULL,
    payment_index INTEGER NOT NULL, resolve_time_ns INTEGER NOT NULL,
    PRIMARY KEY (node, payment_hash)
);
"""


@dataclass
class NodeRow:
    name: str
    privkey: bytes
    root_key: bytes
    balance_msat: int
    add_index: int = 0
    settle_index: int = 0
    payment_index: int = 0


@dataclass
class InvoiceRow:
    node: str
    r_hash: bytes
    preimage: bytes | None
    value_msat: int
    memo: str
    payment_request: str
    payment_addr: bytes
    creation_date: int
    expiry: int
    cltv_expiry: int
    add_index: int
    settle_index: int
    state: int
    settle_date: int
    amt_paid_msat: int
    is_hold: bool
    htlc_payer: str | None = None
    htlc_amt_msat: int = 0
    htlc_accept_time: int = 0
    htlc_accept_height: int = 0
    htlc_expiry_height: int = 0
    htlc_resolve_time: int = 0
    htlc_state: int = 0


@dataclass
class PaymentRow:
    node: str
    payment_hash: bytes
    payment_request: str
    dest: str | None
    value_msat: int
    fee_msat: int
    status: int
    failure_reason: int
    preimage: bytes | None
    creation_time_ns: int
    payment_index: int
    resolve_time_ns: int = 0


@functools.cache
def _upsert_sql(table: str, cols: tuple[str, ...]) -> str:
    return f"INSERT OR REPLACE INTO {table} ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})"


@functools.cache
def _cols(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


class Store:
    """The simnet's database, written by group commit.

    A commit runs at the end of the current event-loop iteration (everything that became dirty
    while the loop ran its ready callbacks shares it). Under load (``siblings()``, the writes in
    progress, is at least ``busy_siblings``) it waits until ``commit_interval_s`` after the
    previous commit, so what arrives meanwhile shares the transaction, like PostgreSQL's
    commit_delay / commit_siblings (measured at 128 cycles in flight: 2.8 commits per paid
    invoice when committing every loop iteration, 0.5 with 2 ms); a lone writer is never
    delayed. Without a running loop, ``flush()`` commits at once.
    """

    def __init__(
        self,
        path: Path,
        commit_interval_s: float = 0.002,
        busy_siblings: int = 4,
        siblings: Callable[[], int] | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self.commit_interval_s = commit_interval_s
        self.busy_siblings = busy_siblings
        self.siblings = siblings or (lambda: 0)
        self._dirty: dict[tuple[str, Any], Any] = {}
        self._meta: dict[str, str] = {}
        self._callbacks: list[Callable[[], None]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None
        self._last_commit = float("-inf")  # loop time of the last commit
        self.commits = 0  # transactions written (group commit: far fewer than the changes)
        self.rows_written = 0

    def close(self) -> None:
        self.flush()
        self._conn.close()

    # ---- writes (marked dirty, committed in groups) ------------------------------------------------
    def save_node(self, row: NodeRow) -> None:
        self._mark(("nodes", row.name), row)

    def save_invoice(self, row: InvoiceRow) -> None:
        self._mark(("invoices", row.node, row.r_hash), row)

    def save_payment(self, row: PaymentRow) -> None:
        self._mark(("payments", row.node, row.payment_hash), row)

    def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value
        self._schedule()

    def _mark(self, key: tuple[Any, ...], row: Any) -> None:
        self._dirty[key] = row
        self._schedule()

    @property
    def pending(self) -> bool:
        return bool(self._dirty or self._meta or self._callbacks or self._waiters)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once everything marked so far is committed (in the order registered)."""
        self._callbacks.append(callback)
        self._schedule()

    def committed(self) -> asyncio.Future[None]:
        """A future that is done once everything marked so far is committed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._schedule()
        return fut

    def _schedule(self) -> None:
        if self._scheduled is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (start-up, tools): the caller flushes
        wait = self._last_commit + self.commit_interval_s - loop.time()
        if wait > 0 and self.siblings() >= self.busy_siblings:
            self._scheduled = loop.call_later(wait, self.flush)
        else:
            self._scheduled = loop.call_soon(self.flush)

    def flush(self) -> None:
        """Commit every dirty row in one transaction, then wake the waiters and run the callbacks."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        dirty, self._dirty = self._dirty, {}
        meta, self._meta = self._meta, {}
        callbacks, self._callbacks = self._callbacks, []
        waiters, self._waiters = self._waiters, []
        if dirty or meta:
            by_table: dict[str, list[Any]] = {}
            for key, row in dirty.items():
                by_table.setdefault(key[0], []).append(row)
            conn = self._conn
            conn.execute("BEGIN")
            try:
                for table, rows in by_table.items():
                    cols = _cols(type(rows[0]))
                    values = [tuple(getattr(r, c) for c in cols) for r in rows]
                    conn.executemany(_upsert_sql(table, tuple(cols)), values)
                if meta:
                    conn.executemany(_upsert_sql("meta", ("key", "value")), list(meta.items()))
                conn.execute("COMMIT")
            except BaseException as exc:
                conn.execute("ROLLBACK")
                log.error("simnet store: commit failed: %s", exc)
                for fut in waiters:
                    if not fut.done():
                        fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                raise
            self.commits += 1
            self.rows_written += len(dirty) + len(meta)
            with contextlib.suppress(RuntimeError):  # no loop: start-up, tools
                self._last_commit = asyncio.get_running_loop().time()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("simnet store: after-commit callback failed")

    # ---- reads (start-up) --------------------------------------------------------------------------
    def load_nodes(self) -> list[NodeRow]:
        cols = _cols(NodeRow)
        return [NodeRow(*r) for r in self._conn.execute(f"SELECT {','.join(cols)} FROM nodes")]

    def load_invoices(self) -> list[InvoiceRow]:
        cols = _cols(InvoiceRow)
        rows = self._conn.execute(f"SELECT {','.join(cols)} FROM invoices ORDER BY node, add_index")
        out = []
        for r in rows:
            row = InvoiceRow(*r)
            row.is_hold = bool(row.is_hold)
            out.append(row)
        return out

    def load_payments(self) -> list[PaymentRow]:
        cols = _cols(PaymentRow)
        rows = self._conn.execute(f"SELECT {','.join(cols)} FROM payments ORDER BY node, payment_index")
        return [PaymentRow(*r) for r in rows]

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        if key in self._meta:
            return self._meta[key]
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default
