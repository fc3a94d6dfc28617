"""The live state of the chargers this process holds: their sessions and connectors, in memory.

The process that holds a charger's websocket owns that charger: its open sessions (with their energy
accounts) and its connectors' last status live here, loaded once when the charger connects, so a
message is handled without reading the database. The database is the log these objects are written to
(see :mod:`csms.db.writer`); :meth:`LiveSession.row` is the snapshot written after each change.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from csms.charging.metering import EnergyAccount
from csms.charging.plausibility import ReadingHistory

ENDED_KEPT = 16  # ended sessions kept per charger, so late retries and replays find them in memory


class SeqSet:
    """The 2.0.1 seqNos seen in one transaction, as sorted disjoint ranges: in-order seqNos keep a
    single range however long the transaction, so memory stays small."""

    __slots__ = ("_ranges",)

    def __init__(self, values: list[int] | None = None) -> None:
        self._ranges: list[list[int]] = []  # [first, last] inclusive
        for value in sorted(values or ()):
            self.add(value)

    def __contains__(self, value: int) -> bool:
        index = bisect.bisect_right(self._ranges, [value, float("inf")]) - 1
        return index >= 0 and self._ranges[index][0] <= value <= self._ranges[index][1]

    def add(self, value: int) -> bool:
        """Add ``value``; False when it was already there."""
        if value in self:
            return False
        index = bisect.bisect_right(self._ranges, [value, float("inf")])
        joins_left = index > 0 and self._ranges[index - 1][1] == value - 1
        joins_right = index < len(self._ranges) and self._ranges[index][0] == value + 1
        if joins_left and joins_right:
            self._ranges[index - 1][1] = self._ranges[index][1]
            del self._ranges[index]
        elif joins_left:
            self._ranges[index - 1][1] = value
        elif joins_right:
            self._ranges[index][0] = value
        else:
            self._ranges.insert(index, [value, value])
        return True


@dataclass(eq=False, slots=True)
class LiveSession:
    """One charging session as this process keeps it (the columns of ``sessions``, and the account)."""

    number: int
    id: str
    charger_id: str
    state: str
    account: EnergyAccount = field(default_factory=EnergyAccount)
    connector_id: int | None = None
    protocol: str | None = None
    ocpp_transaction_id: str | None = None
    remote_start_id: int | None = None
    id_tag: str | None = None
    id_tag_status: str | None = None
    start_fingerprint: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    meter_stop_wh: int | None = None
    power_w: int | None = None
    last_sample_at: datetime | None = None
    last_seq_no: int | None = None
    stop_reason: str | None = None
    offline_events: int = 0
    seq_seen: SeqSet = field(default_factory=SeqSet)
    kinds_seen: set[str] = field(default_factory=set)  # transaction events recorded without a seqNo
    stored_state: str | None = None  # the state last written to the row by the charging service
    payer_id: str | None = None  # the payer of the id tag that started it (known at the start only)
    # the plausible register readings, to judge the next one against (csms.charging.plausibility)
    history: ReadingHistory = field(default_factory=ReadingHistory)
    # the verdicts on the latest samples by digest: a retried sample gets the verdict it got first
    verdicts: dict[str, str | None] = field(default_factory=dict)

    @property
    def energy_wh(self) -> int:
        return self.account.energy_wh

    def row(self, now: datetime) -> dict[str, Any]:
        """The session's row in ``sessions``: every column that changes but ``state``, which settlement
        refines for sold sessions (``number`` as ``b_number``)."""
        return {
            "b_number": self.number,
            "connector_id": self.connector_id,
            "protocol": self.protocol,
            "ocpp_transaction_id": self.ocpp_transaction_id,
            "remote_start_id": self.remote_start_id,
            "id_tag": self.id_tag,
            "id_tag_status": self.id_tag_status,
            "start_fingerprint": self.start_fingerprint,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "meter_start_wh": self.account.meter_start_wh,
            "meter_start_at": self.account.meter_start_at,
            "meter_stop_wh": self.meter_stop_wh,
            "energy_wh": self.account.energy_wh,
            "power_w": self.power_w,
            "last_sample_at": self.last_sample_at,
            "last_seq_no": self.last_seq_no,
            "stop_reason": self.stop_reason,
            "offline_events": self.offline_events,
            "updated_at": now,
        }

    @classmethod
    def from_row(cls, row: Any) -> LiveSession:
        """A session loaded from its ``sessions`` row (an ORM object or a Core row)."""
        start = row.meter_start_wh
        account = EnergyAccount(
            meter_start_wh=start,
            meter_start_at=row.meter_start_at,
            explicit_start=row.protocol == "1.6" and start is not None,
            max_register_wh=None if start is None else start + row.energy_wh,
            closed=row.ended_at is not None,
        )
        return cls(
            number=row.number,
            id=row.id,
            charger_id=row.charger_id,
            state=row.state,
            account=account,
            connector_id=row.connector_id,
            protocol=row.protocol,
            ocpp_transaction_id=row.ocpp_transaction_id,
            remote_start_id=row.remote_start_id,
            id_tag=row.id_tag,
            id_tag_status=row.id_tag_status,
            start_fingerprint=row.start_fingerprint,
            created_at=row.created_at,
            started_at=row.started_at,
            ended_at=row.ended_at,
            meter_stop_wh=row.meter_stop_wh,
            power_w=row.power_w,
            last_sample_at=row.last_sample_at,
            last_seq_no=row.last_seq_no,
            stop_reason=row.stop_reason,
            offline_events=row.offline_events,
            stored_state=row.state,
            history=ReadingHistory.resumed(
                start, row.meter_start_at, account.max_register_wh, row.last_sample_at
            ),
        )


@dataclass(slots=True)
class LiveConnector:
    status: str
    status_at: datetime | None


@dataclass(eq=False)
class LiveCharger:
    """A connected charger's sessions and connectors, indexed the ways its messages look them up."""

    charger_id: str
    by_transaction: dict[str, LiveSession] = field(default_factory=dict)
    by_fingerprint: dict[str, LiveSession] = field(default_factory=dict)
    pending: list[LiveSession] = field(default_factory=list)  # created, no transaction yet
    connectors: dict[int, LiveConnector] = field(default_factory=dict)
    ended: deque[LiveSession] = field(default_factory=lambda: deque(maxlen=ENDED_KEPT))

    def add(self, session: LiveSession) -> None:
        if session.ocpp_transaction_id is not None:
            self.by_transaction[session.ocpp_transaction_id] = session
            if session in self.pending:
                self.pending.remove(session)
        elif session.ended_at is None and session not in self.pending:
            self.pending.append(session)
        if session.start_fingerprint is not None:
            self.by_fingerprint[session.start_fingerprint] = session

    def retire(self, session: LiveSession) -> None:
        """An ended session: kept among the last few (for late retries), then forgotten."""
        if session in self.pending:
            self.pending.remove(session)
        if session in self.ended:
            return
        if len(self.ended) == self.ended.maxlen:
            old = self.ended[0]
            if self.by_transaction.get(old.ocpp_transaction_id or "") is old:
                del self.by_transaction[old.ocpp_transaction_id or ""]
            if self.by_fingerprint.get(old.start_fingerprint or "") is old:
                del self.by_fingerprint[old.start_fingerprint or ""]
        self.ended.append(session)

    def open_on(self, connector_id: int) -> LiveSession | None:
        """The running transaction on ``connector_id`` (the newest, if a lost one was never ended)."""
        found = [
            s for s in self.by_transaction.values() if s.connector_id == connector_id and s.ended_at is None
        ]
        return max(found, key=lambda s: s.number) if found else None

    def sessions(self) -> list[LiveSession]:
        seen: dict[int, LiveSession] = {}
        for session in [*self.by_transaction.values(), *self.pending, *self.ended]:
            seen[session.number] = session
        return list(seen.values())
