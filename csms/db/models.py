"""SQLAlchemy models: the persisted facts of satwatt.

The schema is created only by the Alembic migrations in ``migrations/``; these classes describe it for
the ORM. Energy is integer Wh, power integer W, money integer msat; times are stored in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Charger(Base):
    __tablename__ = "chargers"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    # keyed digest of the password that last passed the scrypt check (csms.security.PasswordVerifier)
    password_check: Mapped[str | None] = mapped_column(String(64))
    registered: Mapped[bool] = mapped_column(Boolean, default=True)
    lenient: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    protocol: Mapped[str | None] = mapped_column(String(16))
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    connected_at: Mapped[datetime | None]
    disconnected_at: Mapped[datetime | None]
    last_message_at: Mapped[datetime | None]
    remote_address: Mapped[str | None] = mapped_column(String(64))
    vendor: Mapped[str | None] = mapped_column(String(255))
    model: Mapped[str | None] = mapped_column(String(255))
    serial_number: Mapped[str | None] = mapped_column(String(255))
    firmware_version: Mapped[str | None] = mapped_column(String(255))
    booted_at: Mapped[datetime | None]
    boot_reason: Mapped[str | None] = mapped_column(String(64))
    meter_interval_s: Mapped[int | None] = mapped_column(Integer)
    meter_interval_status: Mapped[str | None] = mapped_column(String(32))
    tariff_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("tariffs.id"))


class Connector(Base):
    """One addressable outlet: the 1.6 connectorId, or the 2.0.1 EVSE (evse_id) and its plug."""

    __tablename__ = "connectors"

    charger_id: Mapped[str] = mapped_column(
        String(48), ForeignKey("chargers.id", ondelete="CASCADE"), primary_key=True
    )
    connector_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plug_id: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))
    info: Mapped[str | None] = mapped_column(String(255))
    status_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdTag(Base):
    """An RFID card, vehicle id (AutoCharge) or app token that may start a charge."""

    __tablename__ = "id_tags"

    id_tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="Accepted")
    expires_at: Mapped[datetime | None]
    parent_id_tag: Mapped[str | None] = mapped_column(String(64))
    payer_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("payers.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChargingSession(Base):
    """satwatt's record of one charge on one connector, linked to the OCPP transaction."""

    __tablename__ = "sessions"
    __table_args__ = (
        UniqueConstraint("charger_id", "ocpp_transaction_id", name="uq_sessions_charger_tx"),
        Index("ix_sessions_charger_state", "charger_id", "state"),
        Index("ix_sessions_state", "state"),
    )

    # ``number`` doubles as the OCPP 1.6 transactionId, which must be an integer.
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    charger_id: Mapped[str] = mapped_column(String(48), ForeignKey("chargers.id", ondelete="CASCADE"))
    connector_id: Mapped[int | None] = mapped_column(Integer)
    protocol: Mapped[str | None] = mapped_column(String(16))
    ocpp_transaction_id: Mapped[str | None] = mapped_column(String(64))
    remote_start_id: Mapped[int | None] = mapped_column(Integer)
    id_tag: Mapped[str | None] = mapped_column(String(64))
    id_tag_status: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(32))
    start_fingerprint: Mapped[str | None] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    meter_start_wh: Mapped[int | None] = mapped_column(BigInteger)
    meter_start_at: Mapped[datetime | None]
    meter_stop_wh: Mapped[int | None] = mapped_column(BigInteger)
    energy_wh: Mapped[int] = mapped_column(BigInteger, default=0)
    power_w: Mapped[int | None] = mapped_column(Integer)
    last_sample_at: Mapped[datetime | None]
    last_seq_no: Mapped[int | None] = mapped_column(Integer)
    stop_reason: Mapped[str | None] = mapped_column(String(64))
    offline_events: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TransactionEvent(Base):
    """Each transaction message received (1.6 Start/Stop, 2.0.1 TransactionEvent), once per seqNo."""

    __tablename__ = "transaction_events"
    __table_args__ = (UniqueConstraint("session_number", "seq_no", name="uq_tx_events_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_number: Mapped[int] = mapped_column(
        Integer, ForeignKey("sessions.number", ondelete="CASCADE"), index=True
    )
    seq_no: Mapped[int | None] = mapped_column(Integer)
    event_type: Mapped[str] = mapped_column(String(16))
    trigger_reason: Mapped[str | None] = mapped_column(String(32))
    offline: Mapped[bool] = mapped_column(Boolean, default=False)
    timestamp: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    payload: Mapped[dict[str, Any]]


class MeterSample(Base):
    """One normalised meter reading, with the sampled values it came from kept verbatim."""

    __tablename__ = "meter_samples"
    __table_args__ = (
        UniqueConstraint("charger_id", "digest", name="uq_meter_samples_digest"),
        Index("ix_meter_samples_session_time", "session_number", "timestamp"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_number: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("sessions.number", ondelete="CASCADE")
    )
    charger_id: Mapped[str] = mapped_column(String(48))
    connector_id: Mapped[int] = mapped_column(Integer)
    timestamp: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(32))
    context: Mapped[str] = mapped_column(String(32), default="")
    # what makes a sample the same message sent again (see csms.charging.service.sample_digest)
    digest: Mapped[str | None] = mapped_column(String(32))
    energy_register_wh: Mapped[int | None] = mapped_column(BigInteger)
    power_w: Mapped[int | None] = mapped_column(Integer)
    soc_percent: Mapped[int | None] = mapped_column(Integer)
    after_end: Mapped[bool] = mapped_column(Boolean, default=False)
    # why the reading is implausible (csms.charging.plausibility), None when it is plausible
    anomaly: Mapped[str | None] = mapped_column(String(32))
    sampled_values: Mapped[list[Any]]


class ChargerMessage(Base):
    """Informational messages a charger sent (boot, firmware, diagnostics, reports, events, security)."""

    __tablename__ = "charger_messages"
    __table_args__ = (Index("ix_charger_messages_charger_time", "charger_id", "received_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(48))
    action: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    payload: Mapped[dict[str, Any]]
    note: Mapped[str | None] = mapped_column(Text)


class TariffRow(Base):
    """A tariff: its validated definition (see csms.settlement.tariff.Tariff) as JSON."""

    __tablename__ = "tariffs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    definition: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Payer(Base):
    """A driver or fleet that pays for sessions started with its id tags (token held as a digest)."""

    __tablename__ = "payers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Settlement(Base):
    """The money side of a session: the policy state, the tariff it was sold under, who pays."""

    __tablename__ = "settlements"

    session_number: Mapped[int] = mapped_column(
        Integer, ForeignKey("sessions.number", ondelete="CASCADE"), primary_key=True
    )
    payer_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("payers.id"), index=True)
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    tariff_id: Mapped[str | None] = mapped_column(String(32))
    tariff: Mapped[dict[str, Any]]
    state: Mapped[dict[str, Any]]
    closed: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    bill: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LightningInvoice(Base):
    """Every invoice satwatt issued: the energy it prepays, its price, and what the node says of it."""

    __tablename__ = "ln_invoices"
    __table_args__ = (Index("ix_ln_invoices_status", "status"),)

    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    session_number: Mapped[int] = mapped_column(
        Integer, ForeignKey("sessions.number", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    payment_hash: Mapped[str] = mapped_column(String(64), unique=True)
    bolt11: Mapped[str | None] = mapped_column(Text)
    amount_msat: Mapped[int] = mapped_column(BigInteger)
    energy_wh: Mapped[int] = mapped_column(BigInteger)
    price_msat_per_kwh: Mapped[int] = mapped_column(BigInteger)
    fee_msat: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # creating, open, paid, expired, canceled
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]
    amount_paid_msat: Mapped[int | None] = mapped_column(BigInteger)
    settle_index: Mapped[int | None] = mapped_column(BigInteger)


class Refund(Base):
    """A refund paid to an invoice the driver's wallet submitted (LNURL-withdraw): recorded before it is
    paid, paid once per payment hash (see csms.settlement.refunds)."""

    __tablename__ = "refunds"

    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    session_number: Mapped[int] = mapped_column(
        Integer, ForeignKey("sessions.number", ondelete="CASCADE"), index=True
    )
    # the session's number while this refund is being paid or paid, NULL once it failed: unique, so a
    # session has at most one refund that moves money, whichever process records it
    active_for: Mapped[int | None] = mapped_column(Integer, unique=True)
    amount_msat: Mapped[int] = mapped_column(BigInteger)
    bolt11: Mapped[str] = mapped_column(Text)
    payment_hash: Mapped[str] = mapped_column(String(64), unique=True)
    fee_limit_msat: Mapped[int] = mapped_column(BigInteger)
    fee_msat: Mapped[int | None] = mapped_column(BigInteger)  # routing fee, paid by the operator
    status: Mapped[str] = mapped_column(String(16))  # paying, paid, failed
    failure: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    paid_at: Mapped[datetime | None]


class SettlementAction(Base):
    """A settlement decision, persisted before it is acted on (the outbox); done once."""

    __tablename__ = "settlement_actions"
    __table_args__ = (Index("ix_settlement_actions_pending", "status", "session_number"),)

    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    session_number: Mapped[int] = mapped_column(Integer, ForeignKey("sessions.number", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, done, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]


class SessionEvent(Base):
    """What happened in a session, in order: the server-sent event stream replays these."""

    __tablename__ = "session_events"
    __table_args__ = (Index("ix_session_events_session", "session_number", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_number: Mapped[int] = mapped_column(Integer, ForeignKey("sessions.number", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LightningCursor(Base):
    """How far the node's invoice stream has been processed (LND add/settle indexes)."""

    __tablename__ = "lightning_cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    add_index: Mapped[int] = mapped_column(BigInteger, default=0)
    settle_index: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SharedSecret(Base):
    """A server secret every process of a cluster must agree on (cluster mode; one process keeps its
    secrets in the data directory): the first process to start creates it."""

    __tablename__ = "shared_secrets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
