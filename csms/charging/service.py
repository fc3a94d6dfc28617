"""The charging service: applies what chargers report to the persisted charge points and sessions.

It is the application layer between the protocol adapters (which turn OCPP 1.6 / 2.0.1 messages into
the version-free facts of :mod:`csms.charging.events`) and the database. Every fact is written in one
database transaction before the adapter answers the charger, so an acknowledged message is never lost;
retries of the same message are recognised and change nothing (see each method).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from csms.charging.events import (
    Authorization,
    BootInfo,
    ConnectorStatus,
    MeterValue,
    SessionUpdate,
    TransactionMessage,
    TransactionOutcome,
)
from csms.charging.metering import EnergyAccount, Reading, normalise
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

log = logging.getLogger("csms.charging")

PENDING, CHARGING, ENDED = "pending", "charging", "ended"

Listener = Callable[[SessionUpdate], Awaitable[None]]


def new_session_id() -> str:
    return secrets.token_hex(12)


def new_id_tag() -> str:
    """An id tag for a remote start: 20 characters, the 1.6 CiString20 limit."""
    return "SW" + secrets.token_hex(9).upper()


def account_of(session: ChargingSession) -> EnergyAccount:
    start = session.meter_start_wh
    return EnergyAccount(
        meter_start_wh=start,
        meter_start_at=session.meter_start_at,
        explicit_start=session.protocol == "1.6" and start is not None,
        max_register_wh=None if start is None else start + session.energy_wh,
        closed=session.ended_at is not None,
    )


def _store_account(session: ChargingSession, account: EnergyAccount) -> None:
    session.meter_start_wh = account.meter_start_wh
    session.meter_start_at = account.meter_start_at
    session.energy_wh = account.energy_wh


def _log_updates(db: AsyncSession, updates: list[SessionUpdate]) -> None:
    """Each session change goes into the session's event log in the same transaction as the change."""
    for item in updates:
        SessionEventLog.append(
            db,
            item.session_number,
            item.kind,
            {
                "energy_wh": item.energy_wh,
                "power_w": item.power_w,
                "at": (item.sample_at or item.at).isoformat(),
            },
        )


class ChargingService:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        accept_unknown_id_tags: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = sessionmaker
        self.accept_unknown_id_tags = accept_unknown_id_tags
        self.clock = clock
        self._listeners: list[Listener] = []
        # The settlement engine's running cost of a session (msat), None for sessions not sold.
        self.cost_of: Callable[[int], Awaitable[int | None]] | None = None

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def _publish(self, updates: Iterable[SessionUpdate]) -> None:
        for update_ in updates:
            for listener in self._listeners:
                try:
                    await listener(update_)
                except Exception:
                    log.exception("session listener failed for %s", update_.session_id)

    def _update(
        self, session: ChargingSession, kind: Literal["started", "meter", "ended"], sample_at: datetime | None
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
        )

    # ------------------------------------------------------------- connections
    async def reset_connections(self) -> None:
        """At start-up no charger is connected yet, whatever the last run left behind."""
        async with self.db.begin() as db:
            await db.execute(update(Charger).where(Charger.connected.is_(True)).values(connected=False))

    async def charger_connected(self, charger_id: str, protocol: str, remote_address: str | None) -> None:
        now = self.clock()
        async with self.db.begin() as db:
            charger = await db.get(Charger, charger_id)
            if charger is None:  # an unknown charger, admitted by CSMS_ALLOW_UNKNOWN_CHARGERS
                charger = Charger(id=charger_id, registered=False)
                db.add(charger)
            charger.protocol = protocol
            charger.connected = True
            charger.connected_at = now
            charger.last_message_at = now
            charger.remote_address = remote_address

    async def charger_disconnected(self, charger_id: str, last_message_at: datetime | None) -> None:
        async with self.db.begin() as db:
            charger = await db.get(Charger, charger_id)
            if charger is not None:
                charger.connected = False
                charger.disconnected_at = self.clock()
                if last_message_at is not None:
                    charger.last_message_at = last_message_at

    async def flush_last_seen(self, last_seen: dict[str, datetime]) -> None:
        """Persist when each connected charger was last heard from (kept in memory between flushes)."""
        if not last_seen:
            return
        async with self.db.begin() as db:
            for charger_id, at in last_seen.items():
                await db.execute(update(Charger).where(Charger.id == charger_id).values(last_message_at=at))

    # ------------------------------------------------------------ information
    async def booted(self, charger_id: str, info: BootInfo, payload: dict[str, Any]) -> None:
        now = self.clock()
        async with self.db.begin() as db:
            charger = await db.get(Charger, charger_id)
            if charger is None:
                return
            charger.vendor = info.vendor
            charger.model = info.model
            charger.serial_number = info.serial_number
            charger.firmware_version = info.firmware_version
            charger.boot_reason = info.reason
            charger.booted_at = now
            charger.last_message_at = now
            db.add(ChargerMessage(charger_id=charger_id, action="BootNotification", payload=payload))

    async def meter_interval_configured(self, charger_id: str, interval_s: int, status: str) -> None:
        async with self.db.begin() as db:
            await db.execute(
                update(Charger)
                .where(Charger.id == charger_id)
                .values(meter_interval_s=interval_s, meter_interval_status=status)
            )

    async def record_message(self, charger_id: str, action: str, payload: dict[str, Any]) -> None:
        """Keep an informational message (DataTransfer, firmware/diagnostics status, reports...)."""
        async with self.db.begin() as db:
            db.add(ChargerMessage(charger_id=charger_id, action=action, payload=payload))

    async def status_changed(self, charger_id: str, status: ConnectorStatus) -> None:
        now = self.clock()
        async with self.db.begin() as db:
            connector = await db.get(Connector, (charger_id, status.connector_id))
            if connector is None:
                connector = Connector(charger_id=charger_id, connector_id=status.connector_id, status="")
                db.add(connector)
            elif status.timestamp and connector.status_at and status.timestamp < connector.status_at:
                return  # an older status replayed after a newer one: keep the newer
            connector.status = status.status
            connector.plug_id = status.plug_id
            connector.error_code = status.error_code
            connector.info = status.info
            connector.status_at = status.timestamp or now
            connector.updated_at = now

    # ---------------------------------------------------------- authorization
    async def authorize(self, charger_id: str, id_tag: str) -> Authorization:
        async with self.db.begin() as db:
            return await self._authorize(db, charger_id, id_tag)

    async def _authorize(self, db: AsyncSession, charger_id: str, id_tag: str) -> Authorization:
        known = await db.get(IdTag, id_tag)
        if known is not None:
            if known.status == "Accepted" and known.expires_at and known.expires_at < self.clock():
                return Authorization("Expired", known.expires_at, known.parent_id_tag)
            return Authorization(known.status, known.expires_at, known.parent_id_tag)
        session = await db.scalar(
            select(ChargingSession.number).where(
                ChargingSession.charger_id == charger_id,
                ChargingSession.id_tag == id_tag,
                ChargingSession.ended_at.is_(None),
            )
        )
        if session is not None:  # a tag satwatt issued for a remote start on this charger
            return Authorization("Accepted")
        return Authorization("Accepted" if self.accept_unknown_id_tags else "Invalid")

    # ------------------------------------------------------------ sessions
    async def create_pending_session(self, charger_id: str, connector_id: int | None) -> ChargingSession:
        """A session that exists from a remote start request until the charger starts the transaction."""
        async with self.db.begin() as db:
            session = ChargingSession(
                id=new_session_id(),
                charger_id=charger_id,
                connector_id=connector_id,
                id_tag=new_id_tag(),
                id_tag_status="Accepted",
                state=PENDING,
            )
            db.add(session)
            await db.flush()
            session.remote_start_id = session.number
        return session

    async def abandon_pending_session(self, session_id: str, reason: str) -> None:
        async with self.db.begin() as db:
            session = await db.scalar(select(ChargingSession).where(ChargingSession.id == session_id))
            if session is not None and session.ocpp_transaction_id is None and session.ended_at is None:
                session.state = ENDED
                session.ended_at = self.clock()
                session.stop_reason = reason

    async def transaction(self, charger_id: str, message: TransactionMessage) -> TransactionOutcome:
        """Apply a transaction message; a retried message is recognised and changes nothing."""
        updates: list[SessionUpdate] = []
        async with self.db.begin() as db:
            outcome = await self._transaction(db, charger_id, message, updates)
            _log_updates(db, updates)
        await self._publish(updates)
        return outcome

    async def _find_session(
        self, db: AsyncSession, charger_id: str, message: TransactionMessage
    ) -> ChargingSession | None:
        if message.ocpp_transaction_id is not None:
            return await db.scalar(
                select(ChargingSession).where(
                    ChargingSession.charger_id == charger_id,
                    ChargingSession.ocpp_transaction_id == message.ocpp_transaction_id,
                )
            )
        if message.fingerprint is not None:  # a 1.6 StartTransaction sent again
            return await db.scalar(
                select(ChargingSession).where(
                    ChargingSession.charger_id == charger_id,
                    ChargingSession.start_fingerprint == message.fingerprint,
                )
            )
        return None

    async def _pending_for(
        self, db: AsyncSession, charger_id: str, message: TransactionMessage
    ) -> ChargingSession | None:
        query = select(ChargingSession).where(
            ChargingSession.charger_id == charger_id,
            ChargingSession.ocpp_transaction_id.is_(None),
            ChargingSession.ended_at.is_(None),
        )
        if message.remote_start_id is not None:
            query = query.where(ChargingSession.remote_start_id == message.remote_start_id)
        elif message.id_tag is not None:
            query = query.where(ChargingSession.id_tag == message.id_tag)
        else:
            return None
        return await db.scalar(query.order_by(ChargingSession.number.desc()).limit(1))

    async def _transaction(
        self,
        db: AsyncSession,
        charger_id: str,
        message: TransactionMessage,
        updates: list[SessionUpdate],
    ) -> TransactionOutcome:
        protocol = message.protocol
        session = await self._find_session(db, charger_id, message)
        authorization = (
            await self._authorize(db, charger_id, message.id_tag) if message.id_tag is not None else None
        )
        created = False
        if session is None:
            if message.kind != "ended":
                session = await self._pending_for(db, charger_id, message)
            if session is None:
                session = ChargingSession(
                    id=new_session_id(), charger_id=charger_id, state=PENDING, id_tag=message.id_tag
                )
                db.add(session)
            created = True
            session.protocol = protocol
            session.connector_id = message.connector_id or session.connector_id
            session.state = CHARGING
            session.started_at = message.timestamp
            session.start_fingerprint = message.fingerprint
            if message.id_tag is not None:
                session.id_tag = message.id_tag
            if authorization is not None:
                session.id_tag_status = authorization.status
            await db.flush()
            session.ocpp_transaction_id = message.ocpp_transaction_id or str(session.number)
            updates.append(self._update(session, "started", message.timestamp))
        elif message.kind == "started" and message.seq_no is None:
            # 1.6 StartTransaction retried: answer with the same transactionId, change nothing
            return TransactionOutcome(
                session.id, session.ocpp_transaction_id or "", authorization, True, session.number
            )

        if not await self._record_event(db, session, message):
            return TransactionOutcome(
                session.id, session.ocpp_transaction_id or "", authorization, True, session.number
            )
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

        account = account_of(session)
        if message.meter_start_wh is not None and not account.closed:
            account.start(message.meter_start_wh, message.timestamp)
        if message.connector_id is not None and session.connector_id is None:
            session.connector_id = message.connector_id
        changed = await self._add_meter_values(
            db, session, account, message.meter_values, source=f"tx.{message.kind}"
        )
        if message.kind == "ended" and not account.closed:
            account.close(message.meter_stop_wh, message.timestamp)
            session.meter_stop_wh = message.meter_stop_wh
            session.state = ENDED
            session.ended_at = message.timestamp
            session.stop_reason = message.stop_reason
            _store_account(session, account)
            updates.append(self._update(session, "ended", message.timestamp))
        else:
            _store_account(session, account)
            if changed and not created:
                updates.append(self._update(session, "meter", session.last_sample_at))
        return TransactionOutcome(
            session.id, session.ocpp_transaction_id or "", authorization, False, session.number
        )

    async def _record_event(
        self, db: AsyncSession, session: ChargingSession, message: TransactionMessage
    ) -> bool:
        """Record a transaction message once; False when it was already recorded (a retry).

        A charger's messages are handled one at a time, so a look-up before the insert suffices; the
        unique constraint on (session, seqNo) still guards against a race between two connections.
        """
        query = select(TransactionEvent.id).where(TransactionEvent.session_number == session.number)
        if message.seq_no is not None:
            query = query.where(TransactionEvent.seq_no == message.seq_no)
        elif message.kind in ("started", "ended"):
            query = query.where(TransactionEvent.event_type == message.kind)
        else:
            query = None
        if query is not None and await db.scalar(query.limit(1)) is not None:
            return False
        db.add(
            TransactionEvent(
                session_number=session.number,
                seq_no=message.seq_no,
                event_type=message.kind,
                trigger_reason=message.trigger_reason,
                offline=message.offline,
                timestamp=message.timestamp,
                payload=message.payload,
            )
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
        updates: list[SessionUpdate] = []
        async with self.db.begin() as db:
            session = None
            if ocpp_transaction_id is not None:
                session = await db.scalar(
                    select(ChargingSession).where(
                        ChargingSession.charger_id == charger_id,
                        ChargingSession.ocpp_transaction_id == ocpp_transaction_id,
                    )
                )
            elif connector_id > 0:  # no transactionId: the running session on that connector
                session = await db.scalar(
                    select(ChargingSession).where(
                        ChargingSession.charger_id == charger_id,
                        ChargingSession.connector_id == connector_id,
                        ChargingSession.ocpp_transaction_id.is_not(None),
                        ChargingSession.ended_at.is_(None),
                    )
                )
            if session is None:
                await self._store_samples(db, None, charger_id, connector_id, values, "MeterValues")
            else:
                account = account_of(session)
                if await self._add_meter_values(db, session, account, values, source="MeterValues"):
                    _store_account(session, account)
                    updates.append(self._update(session, "meter", session.last_sample_at))
            _log_updates(db, updates)
        await self._publish(updates)

    async def _add_meter_values(
        self,
        db: AsyncSession,
        session: ChargingSession,
        account: EnergyAccount,
        values: Iterable[MeterValue],
        *,
        source: str,
    ) -> bool:
        readings = await self._store_samples(
            db, session, session.charger_id, session.connector_id or 0, values, source
        )
        changed = False
        for reading in sorted(readings, key=lambda r: r.timestamp):
            if reading.energy_register_wh is not None and account.apply(
                reading.energy_register_wh, reading.timestamp
            ):
                changed = True
            if (
                not account.closed
                and reading.power_w is not None
                and (session.last_sample_at is None or reading.timestamp >= session.last_sample_at)
            ):
                session.power_w = reading.power_w
                session.last_sample_at = reading.timestamp
                changed = True
        return changed

    async def _store_samples(
        self,
        db: AsyncSession,
        session: ChargingSession | None,
        charger_id: str,
        connector_id: int,
        values: Iterable[MeterValue],
        source: str,
    ) -> list[Reading]:
        """Persist each meter value once (a retried message is not stored twice); return new ones."""
        readings: list[Reading] = []
        ended = session is not None and session.ended_at is not None
        values = list(values)
        if not values:
            return readings
        insert = sqlite_insert if db.bind.dialect.name == "sqlite" else postgresql_insert
        for value in values:
            reading = normalise(value.timestamp, value.sampled_values)
            row = {
                "session_number": session.number if session is not None else None,
                "charger_id": charger_id,
                "connector_id": connector_id,
                "timestamp": value.timestamp,
                "received_at": self.clock(),
                "source": source,
                "context": reading.context,
                "energy_register_wh": reading.energy_register_wh,
                "power_w": reading.power_w,
                "soc_percent": reading.soc_percent,
                "after_end": ended,
                "sampled_values": value.raw.get("sampledValue", []),
            }
            # one statement: stored unless the same reading is already there (a retried message)
            result = await db.execute(insert(MeterSample).values(row).on_conflict_do_nothing())
            if result.rowcount == 1:  # type: ignore[attr-defined]
                readings.append(reading)
        return readings
