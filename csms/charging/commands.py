"""The version-free commands satwatt sends to chargers, and their results.

The REST API and the settlement engine build these; each connection's protocol adapter turns them into
the OCPP 1.6 or 2.0.1 CALL (see ``csms/ocpp/v16.py`` and ``csms/ocpp/v201.py``) and the answer back
into a :class:`CommandResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RemoteStart:
    id_tag: str
    connector_id: int | None = None
    remote_start_id: int | None = None
    power_limit_w: int | None = None


@dataclass(frozen=True)
class RemoteStop:
    ocpp_transaction_id: str


@dataclass(frozen=True)
class SetPowerLimit:
    """Limit a connector's power (a TxProfile for a running transaction, else TxDefaultProfile)."""

    connector_id: int
    limit_w: int
    profile_id: int
    ocpp_transaction_id: str | None = None
    stack_level: int = 1


@dataclass(frozen=True)
class ClearPowerLimit:
    profile_id: int
    connector_id: int | None = None


@dataclass(frozen=True)
class GetConfiguration:
    """Read 1.6 configuration keys, or 2.0.1 variables named ``Component.Variable``; none = all."""

    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetConfiguration:
    key: str
    value: str


@dataclass(frozen=True)
class TriggerMessage:
    message: str
    connector_id: int | None = None


@dataclass(frozen=True)
class Reset:
    hard: bool = False


@dataclass(frozen=True)
class UnlockConnector:
    connector_id: int


@dataclass(frozen=True)
class ChangeAvailability:
    operative: bool
    connector_id: int | None = None


@dataclass(frozen=True)
class DataTransfer:
    vendor_id: str
    message_id: str | None = None
    data: str | None = None


@dataclass(frozen=True)
class CostUpdate:
    """The running cost of a transaction, for chargers that show it (msat; sent in sats)."""

    ocpp_transaction_id: str
    total_cost_msat: int
    energy_wh: int


Command = (
    RemoteStart
    | RemoteStop
    | SetPowerLimit
    | ClearPowerLimit
    | GetConfiguration
    | SetConfiguration
    | TriggerMessage
    | Reset
    | UnlockConnector
    | ChangeAvailability
    | DataTransfer
    | CostUpdate
)


@dataclass(frozen=True)
class CommandResult:
    """The charger's answer: its status word (Accepted, Rejected, ...) and any data it returned."""

    status: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.status == "Accepted"


class CommandFailed(Exception):
    """The command could not be carried out: the charger is offline, timed out or sent a CALLERROR."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # not_connected | timeout | call_error | invalid | ended (at its owner)


class ChargerNotConnected(CommandFailed):
    def __init__(self, charger_id: str) -> None:
        super().__init__("not_connected", f"charger {charger_id} is not connected")
