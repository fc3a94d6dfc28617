"""The REST API's request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

CHARGER_ID_PATTERN = r"^[A-Za-z0-9._~\-@#*+]{1,48}$"
#: OCPP's integers (connector, EVSE and profile ids) as chargers hold them: 32-bit signed.
INT32_MAX = 2**31 - 1
#: A database integer (BIGINT): the most any offset or id may be.
INT64_MAX = 2**63 - 1
MAX_POWER_W = 10_000_000


def _text_only(value: Any) -> Any:
    """A date-time in a request is RFC 3339 text, never a number of seconds."""
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time string")
    return value


def absent() -> Any:
    """The value of an optional parameter or field that is left out. Used as ``default_factory`` so that
    the document does not call it nullable: an explicit ``null`` is refused."""
    return None


class Strict(BaseModel):
    """A request body: unknown fields refused, and no coercion (``true`` is not an integer, ``"5"`` is not
    a number); a whole number written 5.0 is the integer 5, as JSON Schema reads it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in data.items()}
        return data


class ChargerCreate(Strict):
    id: str = Field(pattern=CHARGER_ID_PATTERN, description="The charge point id in the OCPP URL.")
    password: str | None = Field(
        default=None,
        min_length=8,
        max_length=64,
        description="HTTP Basic password the charger must present (OCPP security profile 1); "
        "2.0.1 chargers accept 16-40 characters.",
    )
    lenient: bool = Field(
        default=False,
        description="Tolerate quirks of this charger: extra fields, over-long strings, zone-less times.",
    )


class ChargerUpdate(Strict):
    """Fields left out (or null) stay as they are. A new password and remove_password: true exclude each
    other."""

    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "required": ["password", "remove_password"],
                "properties": {"password": {"type": "string"}, "remove_password": {"const": True}},
            }
        }
    )
    password: str | None = Field(default=None, min_length=8, max_length=64)
    remove_password: bool = False
    lenient: bool | None = None
    tariff_id: str | None = Field(default=None, description="The tariff this charger sells under.")


class ConnectorOut(BaseModel):
    connector_id: int
    plug_id: int | None
    status: str
    error_code: str | None
    info: str | None
    status_at: datetime | None


class ChargerOut(BaseModel):
    id: str
    registered: bool
    password_set: bool
    lenient: bool
    connection_state: Literal["connected", "disconnected", "never_connected"]
    protocol: str | None
    vendor: str | None
    model: str | None
    serial_number: str | None
    firmware_version: str | None
    booted_at: datetime | None
    last_message_at: datetime | None
    connected_at: datetime | None
    disconnected_at: datetime | None
    remote_address: str | None
    meter_interval_s: int | None
    meter_interval_status: str | None
    tariff_id: str | None
    created_at: datetime
    connectors: list[ConnectorOut]
    owner: str | None = Field(
        default=None,
        description="The satwatt process that holds the charger and owns its sessions (its id in a "
        "cluster; null in one process, or when no live process holds it).",
    )


class MeterPoint(BaseModel):
    timestamp: datetime
    energy_wh: int | None = Field(
        description="Energy delivered in the session up to this reading (null for an implausible one)."
    )
    power_w: int | None
    soc_percent: int | None
    context: str
    after_end: bool
    register_wh: int | None = Field(default=None, description="The meter's register (Wh) as received.")
    anomaly: str | None = Field(
        default=None,
        description="Why the reading is implausible (it is then never billed): from_the_future, "
        "register_out_of_range, power_out_of_range, register_decreased, faster_than_max_power.",
    )


class IdTagCreate(Strict):
    id_tag: str = Field(min_length=1, max_length=36, pattern=r"^[\x21-\x7e]+$")
    status: Literal["Accepted", "Blocked", "Expired"] = "Accepted"
    expires_at: Annotated[AwareDatetime, BeforeValidator(_text_only)] | None = Field(
        default=None,
        strict=False,  # text, parsed as RFC 3339
    )
    parent_id_tag: str | None = Field(default=None, min_length=1, max_length=36, pattern=r"^[\x21-\x7e]+$")


class IdTagOut(BaseModel):
    id_tag: str
    status: str
    expires_at: datetime | None
    parent_id_tag: str | None
    created_at: datetime


# ------------------------------------------------------------------ commands
class RemoteStartBody(Strict):
    command: Literal["remote_start"]
    connector_id: int | None = Field(default=None, ge=1, le=INT32_MAX)
    power_limit_w: int | None = Field(default=None, ge=0, le=MAX_POWER_W)


class RemoteStopBody(Strict):
    command: Literal["remote_stop"]
    session_id: str


class SetPowerLimitBody(Strict):
    command: Literal["set_power_limit"]
    connector_id: int = Field(ge=1, le=INT32_MAX)
    limit_w: int = Field(ge=0, le=MAX_POWER_W)
    profile_id: int = Field(default=1, ge=1, le=INT32_MAX)
    session_id: str | None = Field(default=None, description="Limit this session (TxProfile).")


class ClearPowerLimitBody(Strict):
    command: Literal["clear_power_limit"]
    profile_id: int = Field(ge=1, le=INT32_MAX)
    connector_id: int | None = Field(default=None, ge=0, le=INT32_MAX)


class GetConfigurationBody(Strict):
    command: Literal["get_configuration"]
    keys: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list)


class SetConfigurationBody(Strict):
    command: Literal["set_configuration"]
    key: str = Field(min_length=1, max_length=200)
    value: str = Field(max_length=1000)


class TriggerMessageBody(Strict):
    command: Literal["trigger_message"]
    message: str = Field(min_length=1, max_length=64)
    connector_id: int | None = Field(default=None, ge=0, le=INT32_MAX)


class ResetBody(Strict):
    command: Literal["reset"]
    hard: bool = False


class UnlockConnectorBody(Strict):
    command: Literal["unlock_connector"]
    connector_id: int = Field(ge=1, le=INT32_MAX)


class ChangeAvailabilityBody(Strict):
    command: Literal["change_availability"]
    operative: bool
    connector_id: int | None = Field(default=None, ge=0, le=INT32_MAX)


class DataTransferBody(Strict):
    command: Literal["data_transfer"]
    vendor_id: str = Field(min_length=1, max_length=255)
    message_id: str | None = Field(default=None, max_length=50)
    data: str | None = None


CommandBody = Annotated[
    RemoteStartBody
    | RemoteStopBody
    | SetPowerLimitBody
    | ClearPowerLimitBody
    | GetConfigurationBody
    | SetConfigurationBody
    | TriggerMessageBody
    | ResetBody
    | UnlockConnectorBody
    | ChangeAvailabilityBody
    | DataTransferBody,
    Field(discriminator="command"),
]


class CommandOut(BaseModel):
    status: str = Field(description="The charger's answer: Accepted, Rejected, ...")
    data: dict[str, Any] = Field(default_factory=dict)
    session_id: str | None = None
