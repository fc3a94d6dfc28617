"""SQLite persistence of the simnet (stdlib sqlite3): nodes, invoices, payments, block height.

Everything is loaded into memory at start and written through on every change, in one transaction
per logical operation, so a restart keeps invoices, indexes and balances exactly, like LND's database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

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


def _cols(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)
        self._depth = 0

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write; nested uses join the outer transaction."""
        if self._depth == 0:
            self._conn.execute("BEGIN")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._conn.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            self._conn.execute("COMMIT")

    def _upsert(self, table: str, row: Any) -> None:
        cols = _cols(type(row))
        values = [getattr(row, c) for c in cols]
        sql = f"INSERT OR REPLACE INTO {table} ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})"
        with self.transaction():
            self._conn.execute(sql, values)

    def save_node(self, row: NodeRow) -> None:
        self._upsert("nodes", row)

    def save_invoice(self, row: InvoiceRow) -> None:
        self._upsert("invoices", row)

    def save_payment(self, row: PaymentRow) -> None:
        self._upsert("payments", row)

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
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
