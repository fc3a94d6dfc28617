"""The charging service: applies what chargers report to the live charge points and sessions.

It is the application layer between the protocol adapters (which turn OCPP 1.6 / 2.0.1 messages into
the version-free facts of :mod:`csms.charging.events`) and the database. The state of each connected
charger lives in memory (:mod:`csms.charging.live`), loaded when it connects; each fact changes that
state and is handed to the group-commit writer (:mod:`csms.db.writer`) together with what settlement
decided about it, and the method returns, so the adapter answers, only once it has committed. An
acknowledged message is never lost; retries of the same message are recognised and change nothing.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from csms import jsoncodec
from csms.charging.events import (
    Authorization,
    BootInfo,
    ConnectorStatus,
    MeterValue,
    SessionUpdate,
    TransactionMessage,
    TransactionOutcome,
)
from csms.charging.live import LiveCharger, LiveConnector, LiveSession, SeqSet
from csms.charging.metering import Reading, normalise
from csms.charging.plausibility import Limits, check_value
from csms.charging.session_events import SessionEventLog
from csms.db.models import (
    Charger,
    ChargerMessage,
    ChargingSession,
    Connector,
    IdTag,
    MeterSample,
    TransactionEvent,
)
from csms.db.sequences import SessionNumbers
from csms.db.writer import GroupCommitWriter, Unit

log = logging.getLogger("csms.charging")

PENDING, CHARGING, ENDED = "pending", "charging", "ended"
SUPERSEDED = "SupersededByNewTransaction"
VERDICTS_KEPT = 32  # verdicts remembered per session, so a retried sample is judged as it was first

_sessions = ChargingSession.__table__
_chargers = Charger.__table__
_samples = MeterSample.__table__
_tx_events = TransactionEvent.__table__
_messages = ChargerMessage.__table__

INSERT_SESSION = insert(_sessions)
INSERT_MESSAGE = insert(_messages)
UPDATE_SESSION_STATE = (
    update(_sessions).where(_sessions.c.number == bindparam("b_number")).values(state=bindparam("state"))
)
_charger_by_id = update(_chargers).where(_chargers.c.id == bindparam("b_id"))
UPDATE_LAST_SEEN = _charger_by_id.values(last_message_at=bindparam("at"))
CHARGER_CONNECTED = _charger_by_id.values(
    protocol=bindparam("protocol"),
    connected=True,
    connected_at=bindparam("at"),
    last_message_at=bindparam("at"),
    remote_address=bindparam("remote"),
)
CHARGER_DISCONNECTED = _charger_by_id.values(
    connected=False, disconnected_at=bindparam("at"), last_message_at=bindparam("last")
)
CHARGER_PASSWORD_CHECK = _charger_by_id.values(password_check=bindparam("check"))
CHARGER_BOOTED = _charger_by_id.values(
    vendor=bindparam("vendor"),
    model=bindparam("model"),
    serial_number=bindparam("serial"),
    firmware_version=bindparam("firmware"),
    boot_reason=bindparam("reason"),
    booted_at=bindparam("at"),
    last_message_at=bindparam("at"),
)
CHARGER_METER_INTERVAL = _charger_by_id.values(
    meter_interval_s=bindparam("interval"), meter_interval_status=bindparam("status")
)


class SessionListener(Protocol):
    """What the settlement engine hears of sessions."""

    def session_changed(self, update: SessionUpdate, unit: Unit) -> None:
        """Stage what the change means for money in ``unit``, committed with the change itself."""

    async def session_started(self, update: SessionUpdate) -> None:
        """A transaction started (its session is committed): decide whether and how it is sold."""

    def sells(self, session_number: int) -> bool:
        """Whether the session is sold (its state is then settlement's to keep)."""

    async def reload(self, session_number: int) -> None:
        """Take the session's settlement state from the log again (a write failed)."""


def new_session_id() -> str:
    return secrets.token_hex(12)


def new_id_tag() -> str:
    """An id tag for a remote start: 20 characters, the 1.6 CiString20 limit."""
    return "SW" + secrets.token_hex(9).upper()


def sample_digest(connector_id: int, transaction_id: str | None, source: str, value: MeterValue) -> str:
    """What makes a meter value the same message sent again: the same reading of the same transaction,
    not just the same timestamp (a charger with a stuck clock stamps different readings alike)."""
    content = jsoncodec.dumps(
        [connector_id, transaction_id, source, value.timestamp.isoformat(), value.raw.get("sampledValue")]
    )
    return hashlib.blake2b(content.encode(), digest_size=16).hexdigest()


class ChargingService:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        writer: GroupCommitWriter,
        *,
        accept_unknown_id_tags: bool = False,
        remote_start_timeout_s: int = 120,
        clock: Any = None,
        plausibility: Limits | None = None,
    ) -> None:
        self.db = sessionmaker
        self.writer = writer
        self.accept_unknown_id_tags = accept_unknown_id_tags
        self.remote_start_timeout = timedelta(seconds=remote_start_timeout_s)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.numbers = SessionNumbers(sessionmaker, writer.engine.dialect.name)
        self.events: SessionEventLog | None = None
        self.listener: SessionListener | None = None
        self._live: dict[str, LiveCharger] = {}
        self._start_deadlines: dict[int, datetime] = {}
        dialect = writer.engine.dialect.name
        self._insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
        self._insert_sample = self._insert(_samples).on_conflict_do_nothing()
        self._insert_charger = self._insert(_chargers).on_conflict_do_nothing()
        self._insert_tx_event = self._insert(_tx_events).on_conflict_do_nothing()
        connectors = Connector.__table__
        upsert = self._insert(connectors)
        self._upsert_connector = upsert.on_conflict_do_update(
            index_elements=[connectors.c.charger_id, connectors.c.connector_id],
            set_={
                c: upsert.excluded[c]
                for c in ("status", "plug_id", "error_code", "info", "status_at", "updated_at")
            },
        )
        self._update_session = update(_sessions).where(_sessions.c.number == bindparam("b_number"))
        # The settlement engine's running cost of a session (msat), None for sessions not sold.
        self.cost_of: Any = None
        # what a reading may be, and the implausible readings flagged since start, by reason
        self.limits = plausibility or Limits()
        self.anomalies: Counter[str] = Counter()

    def subscribe(self, listener: SessionListener) -> None:
        self.listener = listener

    # ------------------------------------------------------------- writing
    def _stage_session(self, unit: Unit, session: LiveSession, *, new: bool = False) -> None:
        """Stage the session's row. Its ``state`` is written here only when it changed and the session
        is not sold: settlement keeps a sold session's state (awaiting payment, suspended...)."""
        now = self.clock()
        row = session.row(now)
        if new:
            values = {k: v for k, v in row.items() if k != "b_number"}
            values.update(
                number=session.number, id=session.id, charger_id=session.charger_id, state=session.state
            )
            values["created_at"] = session.created_at or now
            unit.add(INSERT_SESSION, values)
            session.stored_state = session.state
            return
        unit.add(self._update_session, row, key=session.number)
        sold = self.listener is not None and self.listener.sells(session.number)
        if session.state != session.stored_state and not sold:
            unit.add(
                UPDATE_SESSION_STATE, {"b_number": session.number, "state": session.state}, key=session.number
            )
            session.stored_state = session.state

    def _stage_update_events(self, unit: Unit, updates: list[SessionUpdate]) -> None:
        """Each session change goes into the session's event log in the same transaction as the change."""
        for item in updates:
            SessionEventLog.stage(
                unit,
                item.session_number,
                item.kind,
                {
                    "energy_wh": item.energy_wh,
                    "power_w": item.power_w,
                    "at": (item.sample_at or item.at).isoformat(),
                },
                item.at,
            )

    async def _commit(self, unit: Unit, updates: list[SessionUpdate]) -> None:
        """Commit ``unit`` with what settlement makes of ``updates``; a started transaction is committed
        before settlement decides whether it is sold (which reads the payer of its id tag)."""
        self._stage_update_events(unit, updates)
        try:
            for item in updates:
                if item.kind == "started":
                    await self.writer.commit(unit)
                    self._notify(updates)
                    unit = Unit()
                    if self.listener is not None:
                        await self.listener.session_started(item)
                elif self.listener is not None:
                    self.listener.session_changed(item, unit)
            await self.writer.commit(unit)
        except Exception:
            await self._forget(updates)
            raise
        self._notify(updates)

    async def _forget(self, updates: list[SessionUpdate]) -> None:
        """A fact could not be written: what memory made of it must not outlive it. The chargers'
        state is loaded again from the log on their next message, and so is settlement's."""
        for charger_id in {item.charger_id for item in updates}:
            self._live.pop(charger_id, None)
        if self.listener is not None:
            for number in {item.session_number for item in updates}:
                await self.listener.reload(number)

    def _notify(self, updates: list[SessionUpdate]) -> None:
        if self.events is not None:
            for item in updates:
                self.events.notify(item.session_number)

    def _update(
        self, session: LiveSession, kind: Literal["started", "meter", "ended"], sample_at: datetime | None
    ) -> SessionUpdate:
        return SessionUpdate(
            session_id=session.id,
            session_number=session.number,
            charger_id=session.charger_id,
            kind=kind,
            energy_wh=session.energy_wh,
            power_w=session.power_w,
            at=self.clock(),
            sample_at=sample_at,
            id_tag=session.id_tag,
            connector_id=session.connector_id,
            payer_id=session.payer_id,
        )

    # ------------------------------------------------------------- connections
    async def reset_connections(self) -> None:
        """At start-up no charger is connected yet, whatever the last run left behind."""
        async with self.db.begin() as db:
            await db.execute(update(Charger).where(Charger.connected.is_(True)).values(connected=False))

    async def _load(self, charger_id: str) -> LiveCharger:
        """A charger's open sessions, its last few ended ones and its connectors, from the database."""
        live = LiveCharger(charger_id)
        recent_ended = (
            select(ChargingSession.number)
            .where(ChargingSession.charger_id == charger_id, ChargingSession.ended_at.is_not(None))
            .order_by(ChargingSession.number.desc())
            .limit(live.ended.maxlen or 0)
        )
        async with self.db() as db:
            rows = list(
                await db.scalars(
                    select(ChargingSession)
                    .where(
                        ChargingSession.charger_id == charger_id,
                        or_(ChargingSession.ended_at.is_(None), ChargingSession.number.in_(recent_ended)),
                    )
                    .order_by(ChargingSession.number)
                )
            )
            open_numbers = [r.number for r in rows if r.ended_at is None]
            seen: dict[int, list[int]] = {}
            kinds: dict[int, set[str]] = {}
            if open_numbers:
                for number, seq_no, kind in await db.execute(
                    select(
                        TransactionEvent.session_number, TransactionEvent.seq_no, TransactionEvent.event_type
                    ).where(TransactionEvent.session_number.in_(open_numbers))
                ):
                    if seq_no is not None:
                        seen.setdefault(number, []).append(seq_no)
                    kinds.setdefault(number, set()).add(kind)
            for connector_id, status, status_at in await db.execute(
                select(Connector.connector_id, Connector.status, Connector.status_at).where(
                    Connector.charger_id == charger_id
                )
            ):
                live.connectors[connector_id] = LiveConnector(status, status_at)
        for row in rows:
            session = LiveSession.from_row(row)
            session.seq_seen = SeqSet(seen.get(row.number))
            session.kinds_seen = kinds.get(row.number, set())
            if session.ended_at is not None:
                session.kinds_seen.add("ended")
                live.add(session)
                live.retire(session)
                continue
            live.add(session)
            if session.ocpp_transaction_id is None and session.state == PENDING and session.created_at:
                deadline = session.created_at + self.remote_start_timeout
                self._start_deadlines.setdefault(session.number, deadline)
        return live

    async def _charger(self, charger_id: str) -> LiveCharger:
        live = self._live.get(charger_id)
        if live is None:
            live = self._live[charger_id] = await self._load(charger_id)
        return live

    async def charger_connected(self, charger_id: str, protocol: str, remote_address: str | None) -> None:
        """Load the charger's state (kept when a newer connection replaces an older one) and mark it
        connected."""
        await self._charger(charger_id)
        now = self.clock()
        unit = Unit()
        unit.add(self._insert_charger, {"id": charger_id, "registered": False, "created_at": now})
        unit.add(
            CHARGER_CONNECTED,
            {"b_id": charger_id, "protocol": protocol, "at": now, "remote": remote_address},
        )
        await self.writer.commit(unit)

    def forget(self, charger_id: str) -> None:
        """Another process of the cluster took the charger over: drop its state here (the new owner
        loads it from the log once this process's writes for it have committed)."""
        live = self._live.pop(charger_id, None)
        if live is not None:
            for session in live.sessions():
                self._start_deadlines.pop(session.number, None)

    async def charger_disconnected(self, charger_id: str, last_message_at: datetime | None) -> None:
        self._live.pop(charger_id, None)
        unit = Unit()
        unit.add(
            CHARGER_DISCONNECTED,
            {"b_id": charger_id, "at": self.clock(), "last": last_message_at or self.clock()},
        )
        await self.writer.commit(unit)

    async def remember_password_check(self, charger_id: str, check: str) -> None:
        """Keep the digest of a password scrypt just confirmed (csms.security.PasswordVerifier)."""
        unit = Unit()
        unit.add(CHARGER_PASSWORD_CHECK, {"b_id": charger_id, "check": check})
        await self.writer.commit(unit)

    async def flush_last_seen(self, last_seen: dict[str, datetime]) -> None:
        """Persist when each connected charger was last heard from (kept in memory between flushes)."""
        if not last_seen:
            return
        unit = Unit()
        for charger_id, at in last_seen.items():
            unit.add(UPDATE_LAST_SEEN, {"b_id": charger_id, "at": at})
        await self.writer.commit(unit)

    # ------------------------------------------------------------ information
    async def booted(self, charger_id: str, info: BootInfo, payload: dict[str, Any]) -> None:
        now = self.clock()
        unit = Unit()
        unit.add(
            CHARGER_BOOTED,
            {
                "b_id": charger_id,
                "vendor": info.vendor,
                "model": info.model,
                "serial": info.serial_number,
                "firmware": info.firmware_version,
                "reason": info.reason,
                "at": now,
            },
        )
        self._stage_message(unit, charger_id, "BootNotification", payload, now)
        await self.writer.commit(unit)

    async def meter_interval_configured(self, charger_id: str, interval_s: int, status: str) -> None:
        unit = Unit()
        unit.add(CHARGER_METER_INTERVAL, {"b_id": charger_id, "interval": interval_s, "status": status})
        await self.writer.commit(unit)

    @staticmethod
    def _stage_message(
        unit: Unit, charger_id: str, action: str, payload: dict[str, Any], now: datetime
    ) -> None:
        unit.add(
            INSERT_MESSAGE,
            {"charger_id": charger_id, "action": action, "payload": payload, "received_at": now},
        )

    async def record_message(self, charger_id: str, action: str, payload: dict[str, Any]) -> None:
        """Keep an informational message (DataTransfer, firmware/diagnostics status, reports...)."""
        unit = Unit()
        self._stage_message(unit, charger_id, action, payload, self.clock())
        await self.writer.commit(unit)

    async def status_changed(self, charger_id: str, status: ConnectorStatus) -> None:
        now = self.clock()
        live = await self._charger(charger_id)
        known = live.connectors.get(status.connector_id)
        if known is not None and status.timestamp and known.status_at and status.timestamp < known.status_at:
            return  # an older status replayed after a newer one: keep the newer
        at = status.timestamp or now
        live.connectors[status.connector_id] = LiveConnector(status.status, at)
        unit = Unit()
        unit.add(
            self._upsert_connector,
            {
                "charger_id": charger_id,
                "connector_id": status.connector_id,
                "status": status.status,
                "plug_id": status.plug_id,
                "error_code": status.error_code,
                "info": status.info,
                "status_at": at,
                "updated_at": now,
            },
            key=(charger_id, status.connector_id),
        )
        await self.writer.commit(unit)

    # ---------------------------------------------------------- authorization
    async def authorize(self, charger_id: str, id_tag: str) -> Authorization:
        return await self._authorize(charger_id, id_tag)

    async def _authorize(self, charger_id: str, id_tag: str) -> Authorization:
        async with self.db() as db:
            known = await db.get(IdTag, id_tag)
        if known is not None:
            if known.status == "Accepted" and known.expires_at and known.expires_at < self.clock():
                return Authorization("Expired", known.expires_at, known.parent_id_tag, known.payer_id)
            return Authorization(known.status, known.expires_at, known.parent_id_tag, known.payer_id)
        live = self._live.get(charger_id)
        if live is not None and any(s.id_tag == id_tag and s.ended_at is None for s in live.sessions()):
            return Authorization("Accepted")  # a tag satwatt issued for a remote start on this charger
        return Authorization("Accepted" if self.accept_unknown_id_tags else "Invalid")

    # ------------------------------------------------------------ sessions
    async def create_pending_session(self, charger_id: str, connector_id: int | None) -> LiveSession:
        """A session that exists from a remote start request until the charger starts the transaction."""
        number = await self.numbers.take()
        session = LiveSession(
            number=number,
            id=new_session_id(),
            charger_id=charger_id,
            state=PENDING,
            connector_id=connector_id,
            id_tag=new_id_tag(),
            id_tag_status="Accepted",
            remote_start_id=number,
            created_at=self.clock(),
        )
        unit = Unit()
        self._stage_session(unit, session, new=True)
        await self.writer.commit(unit)
        live = self._live.get(charger_id)
        if live is not None:
            live.add(session)
        return session

    def expect_start(self, session_number: int, deadline: datetime) -> None:
        """A remote start was accepted: the transaction must begin by ``deadline`` (else see sweep)."""
        self._start_deadlines[session_number] = deadline

    def start_accepted(self, session_number: int) -> None:
        self.expect_start(session_number, self.clock() + self.remote_start_timeout)

    async def sweep(self) -> None:
        """Give up remote starts that never became a transaction (no car plugged in, the charger gone),
        as chargers do after their connection timeout; the session ends with the reason recorded."""
        now = self.clock()
        for number, deadline in list(self._start_deadlines.items()):
            if deadline <= now:
                self._start_deadlines.pop(number, None)
                seconds = int(self.remote_start_timeout.total_seconds())
                await self.abandon_pending_session(
                    None, f"no transaction within {seconds} s of the remote start", number=number
                )

    async def abandon_pending_session(
        self, session_id: str | None, reason: str, *, number: int | None = None
    ) -> None:
        """End a session whose transaction never started; settlement hears it as ended."""
        session = next(
            (
                s
                for live in self._live.values()
                for s in live.pending
                if s.id == session_id or s.number == number
            ),
            None,
        )
        if session is None:
            async with self.db() as db:
                query = select(ChargingSession)
                query = query.where(
                    ChargingSession.id == session_id if session_id else ChargingSession.number == number
                )
                row = await db.scalar(query)
            if row is None:
                return
            session = LiveSession.from_row(row)
        if session.ocpp_transaction_id is not None or session.ended_at is not None:
            return
        self._start_deadlines.pop(session.number, None)
        session.state = ENDED
        session.ended_at = self.clock()
        session.stop_reason = reason[:64]
        session.account.closed = True
        live = self._live.get(session.charger_id)
        if live is not None:
            live.retire(session)
        log.info("session %s ended without a transaction: %s", session.id, reason)
        unit = Unit()
        self._stage_session(unit, session)
        await self._commit(unit, [self._update(session, "ended", None)])

    def _pending_for(self, live: LiveCharger, message: TransactionMessage) -> LiveSession | None:
        if message.remote_start_id is not None:
            found = [s for s in live.pending if s.remote_start_id == message.remote_start_id]
        elif message.id_tag is not None:
            found = [s for s in live.pending if s.id_tag == message.id_tag]
        else:
            return None
        return max(found, key=lambda s: s.number) if found else None

    async def _by_transaction(self, live: LiveCharger, transaction_id: str) -> LiveSession | None:
        """The session of a transaction id: in memory, else (a transaction older than the sessions kept
        in memory) from the database, then kept."""
        session = live.by_transaction.get(transaction_id)
        if session is not None:
            return session
        async with self.db() as db:
            row = await db.scalar(
                select(ChargingSession).where(
                    ChargingSession.charger_id == live.charger_id,
                    ChargingSession.ocpp_transaction_id == transaction_id,
                )
            )
        if row is None:
            return None
        session = LiveSession.from_row(row)
        if session.ended_at is not None:
            session.kinds_seen.add("ended")
            live.add(session)
            live.retire(session)
        else:
            live.add(session)
        return session

    async def transaction(self, charger_id: str, message: TransactionMessage) -> TransactionOutcome:
        """Apply a transaction message; a retried message is recognised and changes nothing."""
        live = await self._charger(charger_id)
        session: LiveSession | None = None
        if message.ocpp_transaction_id is not None:
            session = await self._by_transaction(live, message.ocpp_transaction_id)
        elif message.fingerprint is not None:  # a 1.6 StartTransaction sent again
            session = live.by_fingerprint.get(message.fingerprint)
        if message.id_tag is None:
            authorization = None
        elif session is not None and session.id_tag == message.id_tag and session.id_tag_status:
            authorization = Authorization(session.id_tag_status)
        else:
            authorization = await self._authorize(charger_id, message.id_tag)

        unit = Unit()
        updates: list[SessionUpdate] = []
        created = False
        if session is None:
            if message.kind != "ended":
                session = self._pending_for(live, message)
            new = session is None
            if session is None:
                session = LiveSession(
                    number=await self.numbers.take(),
                    id=new_session_id(),
                    charger_id=charger_id,
                    state=PENDING,
                    id_tag=message.id_tag,
                    created_at=self.clock(),
                )
            created = True
            self._start_deadlines.pop(session.number, None)
            session.protocol = message.protocol
            session.connector_id = message.connector_id or session.connector_id
            session.state = CHARGING
            session.started_at = message.timestamp
            session.start_fingerprint = message.fingerprint
            if message.id_tag is not None:
                session.id_tag = message.id_tag
            if authorization is not None:
                session.id_tag_status = authorization.status
                session.payer_id = authorization.payer_id
            session.ocpp_transaction_id = message.ocpp_transaction_id or await self._free_transaction_id(
                live, session
            )
            if session.connector_id is not None and message.kind != "ended":
                self._supersede(live, unit, session, message.timestamp, updates)
            if new:
                self._stage_session(unit, session, new=True)
            live.add(session)
            updates.append(self._update(session, "started", message.timestamp))
        elif message.kind == "started" and message.seq_no is None:
            # 1.6 StartTransaction retried: answer with the same transactionId, change nothing
            return self._outcome(session, authorization, duplicate=True)

        if not self._record_event(unit, session, message):
            return self._outcome(session, authorization, duplicate=True)
        if session.started_at is None or message.timestamp < session.started_at:
            session.started_at = message.timestamp  # an earlier event replayed late (2.0.1 offline)
        if message.offline:
            session.offline_events += 1
        if message.seq_no is not None and (
            session.last_seq_no is None or message.seq_no > session.last_seq_no
        ):
            session.last_seq_no = message.seq_no
        if session.id_tag is None and message.id_tag is not None:  # 2.0.1 authorised after the start
            session.id_tag = message.id_tag
            session.id_tag_status = authorization.status if authorization else None

        account = session.account
        flagged: list[str] = []
        start_wh = message.meter_start_wh
        if (
            start_wh is not None
            and not account.closed
            and self._plausible_register(unit, session, "meterStart", start_wh, message, flagged)
        ):
            account.start(start_wh, message.timestamp)
        if message.connector_id is not None and session.connector_id is None:
            session.connector_id = message.connector_id
        judged: dict[int, bool] = {}
        changed = self._add_meter_values(
            unit,
            session,
            message.meter_values,
            source=f"tx.{message.kind}",
            flagged=flagged,
            judged=judged,
        )
        if message.kind == "ended" and not account.closed:
            meter_stop_wh = message.meter_stop_wh
            if meter_stop_wh is not None and not self._plausible_stop(
                unit, session, meter_stop_wh, message, judged, flagged
            ):
                meter_stop_wh = None  # kept as received in the transaction event (and anomaly or sample)
            self._end(session, meter_stop_wh, message.timestamp, message.stop_reason)
            live.retire(session)
            updates.append(self._update(session, "ended", message.timestamp))
        elif changed and not created:
            updates.append(self._update(session, "meter", session.last_sample_at))
        self._stage_session(unit, session)
        await self._commit(unit, updates)
        self._flagged(session.number, flagged)
        return self._outcome(session, authorization, duplicate=False)

    async def _free_transaction_id(self, live: LiveCharger, session: LiveSession) -> str:
        """The 1.6 transactionId satwatt gives a new transaction: the session's number, unless the
        charger already used that id itself (a StopTransaction of a transaction satwatt never saw)."""
        transaction_id = str(session.number)
        while live.by_transaction.get(transaction_id, session) is not session:
            transaction_id = str(await self.numbers.take())
        return transaction_id

    @staticmethod
    def _outcome(
        session: LiveSession, authorization: Authorization | None, *, duplicate: bool
    ) -> TransactionOutcome:
        return TransactionOutcome(
            session.id, session.ocpp_transaction_id or "", authorization, duplicate, session.number
        )

    @staticmethod
    def _end(session: LiveSession, meter_stop_wh: int | None, at: datetime, reason: str | None) -> None:
        session.account.close(meter_stop_wh, at)
        session.meter_stop_wh = meter_stop_wh
        session.state = ENDED
        session.ended_at = at
        session.stop_reason = reason

    def _supersede(
        self,
        live: LiveCharger,
        unit: Unit,
        session: LiveSession,
        at: datetime,
        updates: list[SessionUpdate],
    ) -> None:
        """A new transaction on a connector whose previous one never ended (the charger lost it, e.g. in
        a reboot without StopTransaction): the previous one ends on what was metered, with a reason."""
        assert session.connector_id is not None
        older = live.open_on(session.connector_id)
        if older is None or older is session:
            return
        log.warning(
            "%s: transaction %s on connector %s started while %s was still open; ending %s",
            live.charger_id,
            session.ocpp_transaction_id,
            session.connector_id,
            older.ocpp_transaction_id,
            older.ocpp_transaction_id,
        )
        self._end(older, None, max(at, older.last_sample_at or at), SUPERSEDED)
        live.retire(older)
        self._stage_session(unit, older)
        updates.append(self._update(older, "ended", at))

    def _record_event(self, unit: Unit, session: LiveSession, message: TransactionMessage) -> bool:
        """Record a transaction message once; False when it was already recorded (a retry)."""
        if message.seq_no is not None:
            if not session.seq_seen.add(message.seq_no):
                return False
        elif message.kind in ("started", "ended") and message.kind in session.kinds_seen:
            return False
        session.kinds_seen.add(message.kind)
        unit.add(
            self._insert_tx_event,
            {
                "session_number": session.number,
                "seq_no": message.seq_no,
                "event_type": message.kind,
                "trigger_reason": message.trigger_reason,
                "offline": message.offline,
                "timestamp": message.timestamp,
                "received_at": self.clock(),
                "payload": message.payload,
            },
        )
        return True

    async def meter_values(
        self,
        charger_id: str,
        connector_id: int,
        ocpp_transaction_id: str | None,
        values: Iterable[MeterValue],
    ) -> None:
        """Store MeterValues; those of a transaction update its energy unless it has ended."""
        live = await self._charger(charger_id)
        session = None
        if ocpp_transaction_id is not None:
            session = await self._by_transaction(live, ocpp_transaction_id)
        elif connector_id > 0:  # no transactionId: the running session on that connector
            session = live.open_on(connector_id)
        unit = Unit()
        updates: list[SessionUpdate] = []
        flagged: list[str] = []
        if session is None:
            now = self.clock()
            for value in values:
                reading = normalise(value.timestamp, value.sampled_values)
                anomaly = check_value(
                    reading.timestamp, now, reading.energy_register_wh, reading.power_w, self.limits
                )
                self._stage_sample(
                    unit, None, charger_id, connector_id, value, "MeterValues", False, now, reading, anomaly
                )
                if anomaly is not None:
                    flagged.append(anomaly)
        elif self._add_meter_values(unit, session, values, source="MeterValues", flagged=flagged):
            self._stage_session(unit, session)
            updates.append(self._update(session, "meter", session.last_sample_at))
        await self._commit(unit, updates)
        self._flagged(session.number if session is not None else None, flagged)

    def _add_meter_values(
        self,
        unit: Unit,
        session: LiveSession,
        values: Iterable[MeterValue],
        *,
        source: str,
        flagged: list[str],
        judged: dict[int, bool] | None = None,
    ) -> bool:
        """Store each meter value and apply the plausible ones to the session (an implausible one is
        stored flagged, logged as an ``anomaly`` event and never applied, see
        :mod:`csms.charging.plausibility`); True when the session changed. The reasons of new
        anomalies are added to ``flagged``; each energy register read, with whether some reading of it
        was plausible, to ``judged`` when given."""
        values = sorted(values, key=lambda v: v.timestamp)
        if not values:
            return False
        now = self.clock()
        ended = session.ended_at is not None
        account = session.account
        connector_id = session.connector_id or 0
        readings: list[Reading] = []
        for value in values:
            reading = normalise(value.timestamp, value.sampled_values)
            digest = sample_digest(connector_id, session.ocpp_transaction_id, source, value)
            if digest in session.verdicts:  # a retried sample: judged once, flagged once
                anomaly, fresh = session.verdicts[digest], False
            else:
                anomaly, fresh = self._judge(session, reading, now), True
                session.verdicts[digest] = anomaly
                if len(session.verdicts) > VERDICTS_KEPT:
                    del session.verdicts[next(iter(session.verdicts))]
            self._stage_sample(
                unit,
                session,
                session.charger_id,
                connector_id,
                value,
                source,
                ended,
                now,
                reading,
                anomaly,
                digest,
            )
            if judged is not None and reading.energy_register_wh is not None:
                judged[reading.energy_register_wh] = judged.get(reading.energy_register_wh, False) or (
                    anomaly is None
                )
            if anomaly is None:
                readings.append(reading)
            elif fresh:
                self._stage_anomaly(
                    unit, session, "sample", source, reading.timestamp, reading.energy_register_wh,
                    reading.power_w, anomaly, now, flagged,
                )  # fmt: skip
        changed = False
        for reading in readings:
            if reading.energy_register_wh is not None and account.apply(
                reading.energy_register_wh, reading.timestamp
            ):
                changed = True
            if (
                not account.closed
                and reading.power_w is not None
                and (session.last_sample_at is None or reading.timestamp >= session.last_sample_at)
                and (reading.power_w != session.power_w or reading.timestamp != session.last_sample_at)
            ):
                session.power_w = reading.power_w
                session.last_sample_at = reading.timestamp
                changed = True
        return changed

    def _judge(self, session: LiveSession, reading: Reading, now: datetime) -> str | None:
        """Whether a reading of the session is plausible (None) or why not; a plausible register is
        kept in the session's history."""
        return session.history.take(
            reading.timestamp, now, reading.energy_register_wh, reading.power_w, self.limits
        )

    def _plausible_register(
        self,
        unit: Unit,
        session: LiveSession,
        name: str,
        register_wh: int,
        message: TransactionMessage,
        flagged: list[str],
    ) -> bool:
        """Judge a 1.6 meterStart / meterStop; an implausible one is logged as an anomaly event."""
        now = self.clock()
        anomaly = session.history.take(message.timestamp, now, register_wh, None, self.limits)
        if anomaly is not None:
            source = f"tx.{message.kind}"
            self._stage_anomaly(
                unit, session, name, source, message.timestamp, register_wh, None, anomaly, now, flagged
            )
        return anomaly is None

    def _plausible_stop(
        self,
        unit: Unit,
        session: LiveSession,
        register_wh: int,
        message: TransactionMessage,
        judged: dict[int, bool],
        flagged: list[str],
    ) -> bool:
        """Judge the register a transaction ended on. When it is also one of the message's meter values
        (2.0.1's final reading always is; a 1.6 meterStop often repeats its Transaction.End sample) it
        was judged with them (``judged``), so it is neither judged nor flagged a second time; else it is
        judged here as a meterStop."""
        if register_wh in judged:
            return judged[register_wh]
        return self._plausible_register(unit, session, "meterStop", register_wh, message, flagged)

    @staticmethod
    def _stage_anomaly(
        unit: Unit,
        session: LiveSession,
        reading: str,
        source: str,
        at: datetime,
        register_wh: int | None,
        power_w: int | None,
        reason: str,
        now: datetime,
        flagged: list[str],
    ) -> None:
        """An implausible reading, in the session's event log (it is never priced)."""
        log.warning(
            "%s: implausible %s of session %s (%s at %s: %s Wh, %s W): %s, not billed",
            session.charger_id, reading, session.id, source, at.isoformat(), register_wh, power_w, reason,
        )  # fmt: skip
        data = {
            "reading": reading,
            "source": source,
            "at": at.isoformat(),
            "register_wh": register_wh,
            "power_w": power_w,
            "reason": reason,
        }
        SessionEventLog.stage(unit, session.number, "anomaly", data, now)
        flagged.append(reason)

    def _flagged(self, session_number: int | None, reasons: list[str]) -> None:
        """After the commit: count the new anomalies and wake the readers of the session's events."""
        if not reasons:
            return
        self.anomalies.update(reasons)
        if session_number is not None and self.events is not None:
            self.events.notify(session_number)

    def _stage_sample(
        self,
        unit: Unit,
        session: LiveSession | None,
        charger_id: str,
        connector_id: int,
        value: MeterValue,
        source: str,
        after_end: bool,
        now: datetime,
        reading: Reading,
        anomaly: str | None,
        digest: str | None = None,
    ) -> None:
        if digest is None:
            transaction_id = session.ocpp_transaction_id if session is not None else None
            digest = sample_digest(connector_id, transaction_id, source, value)
        unit.add(
            self._insert_sample,
            {
                "session_number": session.number if session is not None else None,
                "charger_id": charger_id,
                "connector_id": connector_id,
                "timestamp": value.timestamp,
                "received_at": now,
                "source": source,
                "context": reading.context,
                "digest": digest,
                "energy_register_wh": reading.energy_register_wh,
                "power_w": reading.power_w,
                "soc_percent": reading.soc_percent,
                "after_end": after_end,
                "anomaly": anomaly,
                "sampled_values": value.raw.get("sampledValue", []),
            },
        )

    # ------------------------------------------------------------ reading
    def session_state(self, charger_id: str, number: int) -> LiveSession | None:
        live = self._live.get(charger_id)
        if live is None:
            return None
        return next((s for s in live.sessions() if s.number == number), None)
