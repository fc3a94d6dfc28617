"""Version-free facts a charger reports, as the protocol adapters hand them to the charging service."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from csms.charging.metering import SampledValue


@dataclass(frozen=True)
class BootInfo:
    vendor: str
    model: str
    serial_number: str | None = None
    firmware_version: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ConnectorStatus:
    connector_id: int
    status: str
    timestamp: datetime | None = None
    plug_id: int | None = None
    error_code: str | None = None
    info: str | None = None


@dataclass(frozen=True)
class MeterValue:
    timestamp: datetime
    sampled_values: tuple[SampledValue, ...]
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TransactionMessage:
    """A transaction message: 1.6 StartTransaction/StopTransaction or a 2.0.1 TransactionEvent."""

    kind: Literal["started", "updated", "ended"]
    timestamp: datetime
    payload: dict[str, Any]
    ocpp_transaction_id: str | None = None  # None for 1.6 StartTransaction: satwatt assigns it
    connector_id: int | None = None
    id_tag: str | None = None
    meter_start_wh: int | None = None
    meter_stop_wh: int | None = None  # 1.6 meterStop; 2.0.1: the Ended event's final register reading
    meter_values: tuple[MeterValue, ...] = ()
    seq_no: int | None = None
    trigger_reason: str | None = None
    offline: bool = False
    stop_reason: str | None = None
    remote_start_id: int | None = None
    fingerprint: str | None = None
    protocol: str | None = None  # the OCPP version it came in (sets how the start reading is taken)


@dataclass(frozen=True)
class Authorization:
    status: str  # Accepted | Blocked | Expired | Invalid | ConcurrentTx (+ 2.0.1's Unknown ...)
    expires_at: datetime | None = None
    parent_id_tag: str | None = None
    payer_id: str | None = None  # the payer whose tag this is: its sessions are sold to it


@dataclass(frozen=True)
class TransactionOutcome:
    session_id: str
    ocpp_transaction_id: str
    authorization: Authorization | None
    duplicate: bool = False
    session_number: int = 0


@dataclass(frozen=True)
class SessionUpdate:
    """Published after a session changed (and was committed), for the settlement engine and live views.

    ``at`` is satwatt's own clock when the fact arrived; ``sample_at`` the charger's timestamp of it.
    """

    session_id: str
    session_number: int
    charger_id: str
    kind: Literal["started", "meter", "ended"]
    energy_wh: int
    power_w: int | None
    at: datetime
    sample_at: datetime | None = None
    id_tag: str | None = None
    connector_id: int | None = None
    payer_id: str | None = None  # with "started": the payer the id tag belongs to
