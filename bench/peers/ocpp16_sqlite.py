"""The `ocpp` library's documented OCPP 1.6 central system with one SQLite commit per meter sample.

The bare example (``ocpp16_bare.py``) plus what a first real version adds: every MeterValues message's
sampled values are inserted into a ``samples`` table and committed before the answer (stdlib
``sqlite3``, WAL, ``synchronous=NORMAL`` as satwatt uses unless ``--synchronous FULL``), transactions
are recorded too. The handlers are synchronous, as in the library's example, so each commit runs on the
event loop.

    python bench/peers/ocpp16_sqlite.py --port 9001 [--db samples.db]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, AuthorizationStatus
from ocpp16_bare import ChargePoint, now, serve

SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    charge_point_id TEXT NOT NULL,
    connector_id INTEGER NOT NULL,
    id_tag TEXT NOT NULL,
    meter_start INTEGER NOT NULL,
    meter_stop INTEGER,
    started_at TEXT NOT NULL,
    stopped_at TEXT
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    charge_point_id TEXT NOT NULL,
    transaction_id INTEGER,
    timestamp TEXT NOT NULL,
    measurand TEXT NOT NULL,
    unit TEXT,
    value TEXT NOT NULL,
    received_at TEXT NOT NULL
);
"""


def open_database(path: str, synchronous: str = "NORMAL") -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
    db.executescript(SCHEMA)
    return db


class SqliteChargePoint(ChargePoint):
    db: sqlite3.Connection

    @on(Action.start_transaction)
    def on_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **kwargs: Any
    ) -> call_result.StartTransaction:
        with self.db:
            cursor = self.db.execute(
                "INSERT INTO transactions (charge_point_id, connector_id, id_tag, meter_start, started_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (self.id, connector_id, id_tag, meter_start, timestamp),
            )
        assert cursor.lastrowid is not None
        return call_result.StartTransaction(
            transaction_id=cursor.lastrowid, id_tag_info={"status": AuthorizationStatus.accepted}
        )

    @on(Action.stop_transaction)
    def on_stop_transaction(
        self, meter_stop: int, timestamp: str, transaction_id: int, **kwargs: Any
    ) -> call_result.StopTransaction:
        with self.db:
            self.db.execute(
                "UPDATE transactions SET meter_stop = ?, stopped_at = ? WHERE id = ?",
                (meter_stop, timestamp, transaction_id),
            )
        return call_result.StopTransaction(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.meter_values)
    def on_meter_values(
        self, connector_id: int, meter_value: list[dict[str, Any]], **kwargs: Any
    ) -> call_result.MeterValues:
        received = now()
        rows = [
            (
                self.id,
                kwargs.get("transaction_id"),
                reading["timestamp"],
                sampled.get("measurand", "Energy.Active.Import.Register"),
                sampled.get("unit"),
                sampled["value"],
                received,
            )
            for reading in meter_value
            for sampled in reading["sampled_value"]
        ]
        with self.db:  # one commit per MeterValues message
            self.db.executemany(
                "INSERT INTO samples (charge_point_id, transaction_id, timestamp, measurand, unit, value, "
                "received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return call_result.MeterValues()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9001, help="TCP port on 127.0.0.1 (default 9001)")
    parser.add_argument("--db", help="SQLite file (default: a new file in a temporary directory)")
    parser.add_argument(
        "--synchronous",
        choices=("NORMAL", "FULL"),
        default="NORMAL",
        help="PRAGMA synchronous (default NORMAL, as satwatt; FULL fsyncs the WAL at every commit)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ocpp16-sqlite-") as tmp:
        SqliteChargePoint.db = open_database(args.db or os.path.join(tmp, "samples.db"), args.synchronous)
        asyncio.run(serve(args.port, SqliteChargePoint))
