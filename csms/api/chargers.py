"""/api/v1/chargers: the charger registry, its live state, and commands to a charger."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from csms.api.auth import require_operator
from csms.api.deps import registry_of, service_of
from csms.api.document import errors
from csms.api.problems import Problem
from csms.api.schemas import (
    ChangeAvailabilityBody,
    ChargerCreate,
    ChargerOut,
    ChargerUpdate,
    ClearPowerLimitBody,
    CommandBody,
    CommandOut,
    ConnectorOut,
    DataTransferBody,
    GetConfigurationBody,
    RemoteStartBody,
    RemoteStopBody,
    ResetBody,
    SetConfigurationBody,
    SetPowerLimitBody,
    TriggerMessageBody,
    UnlockConnectorBody,
)
from csms.charging import commands as cmd
from csms.charging import control
from csms.charging.service import ChargingService
from csms.db.models import Charger, Connector, TariffRow
from csms.ocpp.registry import ConnectionRegistry, Whereabouts
from csms.security import (
    CHARGER_PASSWORD_MAX,
    CHARGER_PASSWORD_MIN,
    CHARGER_PASSWORD_PATTERN,
    generate_charger_password,
    hash_password,
)

log = logging.getLogger("csms.api.chargers")

router = APIRouter(
    prefix="/api/v1/chargers",
    tags=["chargers"],
    dependencies=[Depends(require_operator)],
    responses=errors(401),
)

Service = Annotated[ChargingService, Depends(service_of)]
Registry = Annotated[ConnectionRegistry, Depends(registry_of)]


def charger_out(
    charger: Charger,
    connectors: list[Connector],
    registry: ConnectionRegistry,
    where: Whereabouts | None = None,
) -> ChargerOut:
    """The charger as the API shows it. ``where``: where the cluster holds it (one process: here)."""
    live = registry.get(charger.id)
    elsewhere = where is not None and where.connected and where.process_id not in (None, registry.process_id)
    if live is not None or elsewhere:
        state = "connected"
    elif charger.connected_at is None:
        state = "never_connected"
    else:
        state = "disconnected"
    last = charger.last_message_at
    if live is not None and (last is None or live.last_message_at > last):
        last = live.last_message_at
    return ChargerOut(
        id=charger.id,
        registered=charger.registered,
        password_set=charger.password_hash is not None,
        lenient=charger.lenient,
        connection_state=state,
        protocol=live.version if live is not None else charger.protocol,
        owner=where.process_id if where is not None else registry.process_id if live is not None else None,
        vendor=charger.vendor,
        model=charger.model,
        serial_number=charger.serial_number,
        firmware_version=charger.firmware_version,
        booted_at=charger.booted_at,
        last_message_at=last,
        connected_at=charger.connected_at,
        disconnected_at=charger.disconnected_at,
        remote_address=charger.remote_address,
        meter_interval_s=charger.meter_interval_s,
        meter_interval_status=charger.meter_interval_status,
        tariff_id=charger.tariff_id,
        created_at=charger.created_at,
        connectors=[
            ConnectorOut(
                connector_id=c.connector_id,
                plug_id=c.plug_id,
                status=c.status,
                error_code=c.error_code,
                info=c.info,
                status_at=c.status_at,
            )
            for c in sorted(connectors, key=lambda c: c.connector_id)
        ],
    )


async def _load(service: ChargingService, charger_id: str) -> tuple[Charger, list[Connector]]:
    async with service.db() as db:
        charger = await db.get(Charger, charger_id)
        if charger is None:
            raise Problem(404, "Charger not found", f"no charger with id {charger_id!r}")
        connectors = list(await db.scalars(select(Connector).where(Connector.charger_id == charger_id)))
    return charger, connectors


@router.post(
    "", status_code=201, response_model=ChargerOut, summary="Register a charger", responses=errors(409, 422)
)
async def register_charger(
    body: ChargerCreate, service: Service, registry: Registry, response: Response
) -> ChargerOut:
    password_hash = (
        await asyncio.to_thread(hash_password, body.password) if body.password is not None else None
    )
    async with service.db() as db:
        existing = await db.get(Charger, body.id)
        if existing is not None and existing.registered:
            raise Problem(409, "Charger already registered", f"a charger with id {body.id!r} exists")
        if existing is not None:  # it connected before while unknown chargers were allowed
            existing.registered = True
            existing.password_hash = password_hash
            existing.lenient = body.lenient
        else:
            db.add(Charger(id=body.id, password_hash=password_hash, lenient=body.lenient, registered=True))
        try:
            await db.commit()
        except IntegrityError:
            raise Problem(
                409, "Charger already registered", f"a charger with id {body.id!r} exists"
            ) from None
    charger, connectors = await _load(service, body.id)
    response.headers["Location"] = f"/api/v1/chargers/{quote(body.id, safe='')}"
    return charger_out(charger, connectors, registry)


@router.get("", response_model=list[ChargerOut], summary="List chargers")
async def list_chargers(service: Service, registry: Registry) -> list[ChargerOut]:
    async with service.db() as db:
        chargers = list(await db.scalars(select(Charger).order_by(Charger.id)))
        connectors = list(await db.scalars(select(Connector)))
    by_charger: dict[str, list[Connector]] = {}
    for connector in connectors:
        by_charger.setdefault(connector.charger_id, []).append(connector)
    where = await registry.all_whereabouts()
    return [charger_out(c, by_charger.get(c.id, []), registry, where.get(c.id)) for c in chargers]


@router.get("/{charger_id}", response_model=ChargerOut, summary="Show one charger", responses=errors(404))
async def get_charger(charger_id: str, service: Service, registry: Registry) -> ChargerOut:
    charger, connectors = await _load(service, charger_id)
    return charger_out(charger, connectors, registry, await registry.whereabouts(charger_id))


@router.patch(
    "/{charger_id}",
    response_model=ChargerOut,
    summary="Change a charger's settings",
    responses=errors(404, 422),
)
async def update_charger(
    charger_id: str, body: ChargerUpdate, service: Service, registry: Registry
) -> ChargerOut:
    if body.password is not None and body.remove_password:
        raise Problem(
            422,
            "Invalid request",
            "password and remove_password exclude each other",
            errors=[{"field": "password", "message": "conflicts with remove_password"}],
        )
    async with service.db.begin() as db:
        charger = await db.get(Charger, charger_id)
        if charger is None:
            raise Problem(404, "Charger not found", f"no charger with id {charger_id!r}")
        if body.password is not None:
            charger.password_hash = await asyncio.to_thread(hash_password, body.password)
        if body.remove_password:
            charger.password_hash = None
        if body.lenient is not None:
            charger.lenient = body.lenient
        if body.tariff_id is not None:
            if await db.get(TariffRow, body.tariff_id) is None:
                raise Problem(
                    422,
                    "Invalid request",
                    f"tariff_id: no tariff {body.tariff_id!r}",
                    errors=[{"field": "tariff_id", "message": "no such tariff"}],
                )
            charger.tariff_id = body.tariff_id
    charger, connectors = await _load(service, charger_id)
    return charger_out(charger, connectors, registry)


@router.delete(
    "/{charger_id}", status_code=204, summary="Remove a charger and its history", responses=errors(404)
)
async def delete_charger(charger_id: str, service: Service, registry: Registry) -> Response:
    async with service.db.begin() as db:
        charger = await db.get(Charger, charger_id)
        if charger is None:
            raise Problem(404, "Charger not found", f"no charger with id {charger_id!r}")
        await db.delete(charger)
    await registry.drop(charger_id, "charger removed")
    return Response(status_code=204)


def _command(body: CommandBody, session_transaction: str | None) -> cmd.Command:
    match body:
        case SetPowerLimitBody():
            return cmd.SetPowerLimit(body.connector_id, body.limit_w, body.profile_id, session_transaction)
        case ClearPowerLimitBody():
            return cmd.ClearPowerLimit(body.profile_id, body.connector_id)
        case GetConfigurationBody():
            return cmd.GetConfiguration(tuple(body.keys))
        case SetConfigurationBody():
            return cmd.SetConfiguration(body.key, body.value)
        case TriggerMessageBody():
            return cmd.TriggerMessage(body.message, body.connector_id)
        case ResetBody():
            return cmd.Reset(body.hard)
        case UnlockConnectorBody():
            return cmd.UnlockConnector(body.connector_id)
        case ChangeAvailabilityBody():
            return cmd.ChangeAvailability(body.operative, body.connector_id)
        case DataTransferBody():
            return cmd.DataTransfer(body.vendor_id, body.message_id, body.data)
    raise AssertionError(body)


FAILURE_STATUS = {"not_connected": 409, "timeout": 504, "call_error": 502, "invalid": 422, "ended": 409}


@router.post(
    "/{charger_id}/commands",
    response_model=CommandOut,
    summary="Send a command to a connected charger and return its answer",
    responses=errors(404, 409, 422, 502, 504),
)
async def send_command(
    charger_id: str, body: CommandBody, service: Service, registry: Registry
) -> CommandOut:
    await _load(service, charger_id)
    try:
        if isinstance(body, RemoteStartBody):
            session, result = await control.remote_start(
                service, registry, charger_id, body.connector_id, body.power_limit_w
            )
            return CommandOut(status=result.status, data=result.data, session_id=session.id)
        if isinstance(body, RemoteStopBody):
            result = await control.remote_stop(service, registry, body.session_id)
            return CommandOut(status=result.status, data=result.data, session_id=body.session_id)
        transaction = None
        if isinstance(body, SetPowerLimitBody) and body.session_id is not None:
            transaction = (await control.running_session(service, body.session_id)).ocpp_transaction_id
        result = await registry.execute(charger_id, _command(body, transaction))
        return CommandOut(status=result.status, data=result.data)
    except control.SessionNotFound as exc:
        raise Problem(404, "Session not found", f"no session with id {exc}") from None
    except control.SessionNotRunning as exc:
        raise Problem(409, "Session not running", f"session {exc} has no running transaction") from None
    except cmd.CommandFailed as exc:
        raise Problem(
            FAILURE_STATUS.get(exc.reason, 502), "Command failed", str(exc), reason=exc.reason
        ) from None


# ------------------------------------------------------------------------------ password rotation
class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str | None = Field(
        default=None,
        min_length=CHARGER_PASSWORD_MIN,
        max_length=max(CHARGER_PASSWORD_MAX.values()),
        pattern=CHARGER_PASSWORD_PATTERN,
        description="The new password (16-20 characters for OCPP 1.6, 16-40 for 2.0.1; letters, digits and "
        "*-_=:+|@.); none: satwatt makes a random one.",
    )


class PasswordChanged(BaseModel):
    charger_id: str
    password: str = Field(description="The new password, shown this once (only its hash is kept).")
    protocol: str = Field(description="The OCPP version it was sent with.")
    configuration_key: str = Field(
        description="AuthorizationKey (1.6, sent as the hex of the password) or "
        "SecurityCtrlr.BasicAuthPassword (2.0.1)."
    )
    status: str = Field(description="The charger's answer: always Accepted here.")


PASSWORD_KEYS = {"1.6": "AuthorizationKey", "2.0.1": "SecurityCtrlr.BasicAuthPassword"}


@router.post(
    "/{charger_id}/password",
    response_model=PasswordChanged,
    summary="Give a connected charger a new password through OCPP, kept only if the charger accepts it",
    responses=errors(404, 409, 422, 502, 504),
)
async def change_password(
    charger_id: str,
    service: Service,
    registry: Registry,
    response: Response,
    body: PasswordChange | None = None,
) -> PasswordChanged:
    """Send a new HTTP Basic password to the charger (1.6 ChangeConfiguration AuthorizationKey, as the
    security whitepaper says: the hex of the password; 2.0.1 SetVariables SecurityCtrlr.BasicAuthPassword).
    satwatt stores the new password's hash only when the charger answers Accepted; otherwise the old
    password stays. The charger uses the new password from its next connection."""
    await _load(service, charger_id)
    where = await registry.whereabouts(charger_id)
    if where is None or not where.connected or where.protocol is None:
        raise Problem(409, "Command failed", f"charger {charger_id} is not connected", reason="not_connected")
    version = where.protocol
    password = body.password if body is not None and body.password is not None else None
    if password is not None and len(password) > CHARGER_PASSWORD_MAX[version]:
        raise Problem(
            422,
            "Invalid request",
            f"password: OCPP {version} takes at most {CHARGER_PASSWORD_MAX[version]} characters",
            errors=[{"field": "password", "message": f"at most {CHARGER_PASSWORD_MAX[version]} characters"}],
        )
    password = password or generate_charger_password()
    new_hash = await asyncio.to_thread(hash_password, password)
    key = PASSWORD_KEYS[version]
    value = password.encode().hex() if version == "1.6" else password
    try:
        result = await registry.execute(charger_id, cmd.SetConfiguration(key, value))
    except cmd.CommandFailed as exc:
        if exc.reason == "timeout":  # it may have taken the password: the operator must be able to set it
            raise Problem(
                504,
                "Command failed",
                f"{exc}; the password is unchanged in satwatt, but the charger may have taken the new one: "
                "if it cannot reconnect, set unconfirmed_password with PATCH /api/v1/chargers/{id}",
                reason="timeout",
                unconfirmed_password=password,
                headers={"Cache-Control": "no-store"},
            ) from None
        raise Problem(
            FAILURE_STATUS.get(exc.reason, 502), "Command failed", str(exc), reason=exc.reason
        ) from None
    if result.status != "Accepted":
        log.warning("%s: refused a new password (%s); the old one stays", charger_id, result.status)
        raise Problem(
            409,
            "Password not changed",
            f"the charger answered {result.status} to {key}; the old password stays",
            reason="rejected",
        )
    async with service.db.begin() as db:
        charger = await db.get(Charger, charger_id)
        if charger is None:  # removed meanwhile
            raise Problem(404, "Charger not found", f"no charger with id {charger_id!r}")
        charger.password_hash = new_hash
    log.info("%s: password changed through %s (OCPP %s)", charger_id, key, version)
    response.headers["Cache-Control"] = "no-store"
    return PasswordChanged(
        charger_id=charger_id,
        password=password,
        protocol=version,
        configuration_key=key,
        status=result.status,
    )
