"""The offline queue: transaction messages and meter values written to SQLite before they are sent.

Every transaction message (1.6 StartTransaction / MeterValues / StopTransaction, 2.0.1 TransactionEvent
and its meter values) is committed here - with the current state of its transaction - before it joins
the charge point's outbox, and deleted only once the central system has answered it.  A restart (a
crash, ``kill -9``, a power cut of the board: WAL with ``synchronous=FULL``) finds the messages not yet
answered, in order, and the transactions that were still running, which the shim then ends with reason
PowerLoss at the meter's reading.  Messages are replayed exactly as first written: a 2.0.1 event queued
while offline keeps ``offline: true`` and its ``seqNo``.  1.6 messages of a transaction whose
StartTransaction was not yet answered get the CSMS's transactionId when they are sent; that id is kept
here too.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chargepoint_sim.chargepoint import Transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    action TEXT NOT NULL,
    payload TEXT NOT NULL,
    local_id INTEGER,
    queued_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions (
    local_id INTEGER PRIMARY KEY,
    connector_id INTEGER NOT NULL,
    tx_id TEXT,
    csms_id INTEGER,
    id_tag TEXT,
    id_type TEXT NOT NULL,
    meter_start_wh INTEGER NOT NULL,
    started_at REAL NOT NULL,
    seq_no INTEGER NOT NULL,
    remote_start_id INTEGER,
    authorized INTEGER NOT NULL,
    charging_state TEXT NOT NULL,
    ended INTEGER NOT NULL
);
"""


TX_COLUMNS = (
    "local_id",
    "connector_id",
    "tx_id",
    "csms_id",
    "id_tag",
    "id_type",
    "meter_start_wh",
    "started_at",
    "seq_no",
    "remote_start_id",
    "authorized",
    "charging_state",
    "ended",
)


class QueueError(Exception):
    """The queue file cannot be used (unreadable, or it belongs to another charger or protocol)."""


@dataclass(frozen=True)
class QueuedMessage:
    key: int
    action: str
    payload: dict[str, Any]
    local_id: int | None


class OfflineQueue:
    """The charge point's :class:`~chargepoint_sim.chargepoint.OutboxJournal`, in one SQLite file."""

    def __init__(self, path: Path, charge_point_id: str, protocol: str) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise QueueError(f"offline.queue: cannot open {path}: {e}") from None
        owner = self._meta("owner")
        pending = self.count()
        mine = f"{charge_point_id} {protocol}"
        if owner is not None and owner != mine and pending:
            raise QueueError(
                f"offline.queue: {path} holds {pending} unsent message(s) of {owner.replace(' ', ' (OCPP ')}"
                f"), not of {charge_point_id} (OCPP {protocol}); send them with that configuration first, or "
                "give this one another queue file"
            )
        self._set_meta("owner", mine)

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ OutboxJournal
    def append(self, action: str, payload: dict[str, Any], tx: Transaction | None) -> int:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if tx is not None:
                self._save_tx(tx)
            cur = self.db.execute(
                "INSERT INTO outbox (action, payload, local_id, queued_at) VALUES (?, ?, ?, ?)",
                (
                    action,
                    json.dumps(payload, separators=(",", ":")),
                    tx.local_id if tx else None,
                    time.time(),
                ),
            )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def _save_tx(self, tx: Transaction) -> None:
        updated = ", ".join(f"{c} = excluded.{c}" for c in TX_COLUMNS[2:] if c != "csms_id")
        self.db.execute(
            f"INSERT INTO transactions ({', '.join(TX_COLUMNS)}) VALUES ({', '.join('?' * len(TX_COLUMNS))})"
            f" ON CONFLICT (local_id) DO UPDATE SET {updated},"
            " csms_id = COALESCE(excluded.csms_id, transactions.csms_id)",
            (
                tx.local_id,
                tx.connector_id,
                tx.tx_id,
                tx.csms_id,
                tx.id_tag,
                tx.id_type,
                tx.meter_start_wh,
                tx.started_at,
                tx.seq_no,
                tx.remote_start_id,
                int(tx.authorized),
                tx.charging_state,
                int(tx.ended),
            ),
        )

    def done(self, key: int) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM outbox WHERE key = ?", (key,))
            self.db.execute(
                "DELETE FROM transactions WHERE ended = 1 AND local_id NOT IN "
                "(SELECT local_id FROM outbox WHERE local_id IS NOT NULL)"
            )

    def set_csms_tx_id(self, local_id: int, csms_id: int) -> None:
        self.db.execute("UPDATE transactions SET csms_id = ? WHERE local_id = ?", (csms_id, local_id))

    # ------------------------------------------------------------------ start-up
    def next_local_id(self) -> int:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            stored = int(self._meta("next_local_id") or 1)
            top = self.db.execute("SELECT COALESCE(MAX(local_id), 0) FROM transactions").fetchone()[0]
            n = max(stored, int(top) + 1)
            self._set_meta("next_local_id", str(n + 1))
        return n

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def pending(self) -> list[QueuedMessage]:
        rows = self.db.execute("SELECT key, action, payload, local_id FROM outbox ORDER BY key").fetchall()
        return [
            QueuedMessage(int(k), str(a), json.loads(p), None if lid is None else int(lid))
            for k, a, p, lid in rows
        ]

    def csms_tx_ids(self) -> dict[int, int]:
        rows = self.db.execute(
            "SELECT local_id, csms_id FROM transactions WHERE csms_id IS NOT NULL"
        ).fetchall()
        return {int(local): int(csms) for local, csms in rows}

    def open_transactions(self) -> list[Transaction]:
        rows = self.db.execute(
            f"SELECT {', '.join(TX_COLUMNS[:-1])} FROM transactions WHERE ended = 0 ORDER BY local_id"
        ).fetchall()
        return [
            Transaction(
                connector_id=int(cid),
                id_tag=tag,
                meter_start_wh=int(start),
                started_at=float(at),
                local_id=int(local),
                tx_id=tx_id,
                csms_id=None if csms is None else int(csms),
                seq_no=int(seq),
                remote_start_id=None if rsid is None else int(rsid),
                authorized=bool(auth),
                charging_state=str(state),
                id_type=str(id_type),
            )
            for local, cid, tx_id, csms, tag, id_type, start, at, seq, rsid, auth, state in rows
        ]

    def close(self) -> None:
        self.db.close()
