"""What the two protocol adapters (OCPP 1.6 and 2.0.1) share."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from csms.charging.commands import Command, CommandFailed, CommandResult, DataTransfer
from csms.charging.events import BootInfo, MeterValue
from csms.charging.metering import SampledValue, to_decimal
from csms.charging.service import ChargingService
from csms.ocpp.rpc import CallError, CallTimeout, ConnectionGone, HandlerResult, RpcEndpoint
from csms.ocpp.schemas import PayloadError, error_code, parse_datetime

log = logging.getLogger("csms.ocpp")

Inbound = Callable[[dict[str, Any]], Awaitable[HandlerResult]]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ProtocolAdapter:
    """Turns one version's OCPP messages into charging-service calls and commands into CALLs."""

    version: ClassVar[str]
    inbound_actions: ClassVar[frozenset[str]]

    def __init__(
        self,
        charger_id: str,
        service: ChargingService,
        *,
        heartbeat_interval_s: int,
        meter_sample_interval_s: int,
        lenient: bool = False,
    ) -> None:
        self.charger_id = charger_id
        self.service = service
        self.heartbeat_interval_s = heartbeat_interval_s
        self.meter_sample_interval_s = meter_sample_interval_s
        self.lenient = lenient
        self.rpc: RpcEndpoint | None = None

    # inbound
    async def handle(self, action: str, payload: dict[str, Any]) -> HandlerResult:
        handler: Inbound = getattr(self, f"on_{action}")
        return await handler(payload)

    def timestamp(self, payload: dict[str, Any], field: str = "timestamp") -> datetime:
        """A date-time field, parsed strictly (a lenient charger may omit the zone)."""
        try:
            return parse_datetime(str(payload[field]), require_zone=not self.lenient)
        except (KeyError, ValueError) as exc:
            raise PayloadError(
                error_code(self.version, "format"),
                f"{field}: {exc}",
                {"field": field},  # type: ignore[arg-type]
            ) from None

    @staticmethod
    def sampled_value(raw: dict[str, Any]) -> SampledValue:
        unit = raw.get("unit")
        multiplier = 0
        if isinstance(raw.get("unitOfMeasure"), dict):
            unit = raw["unitOfMeasure"].get("unit", unit)
            multiplier = int(raw["unitOfMeasure"].get("multiplier", 0))
        return SampledValue(
            value=to_decimal(raw.get("value")),
            measurand=raw.get("measurand") or "Energy.Active.Import.Register",
            unit=unit,
            multiplier=multiplier,
            phase=raw.get("phase"),
            context=raw.get("context"),
            location=raw.get("location"),
            signed=raw.get("format") == "SignedData",
        )

    def meter_values(self, values: list[dict[str, Any]] | None) -> tuple[MeterValue, ...]:
        """Meter values as the version-free core takes them (1.6 and 2.0.1 share the shape)."""
        return tuple(
            MeterValue(
                timestamp=self.timestamp(value),
                sampled_values=tuple(self.sampled_value(s) for s in value.get("sampledValue", [])),
                raw=value,
            )
            for value in values or []
        )

    async def booted(self, info: BootInfo, payload: dict[str, Any]) -> HandlerResult:
        """Record a BootNotification, accept it, and configure the charger once the answer is sent."""
        await self.service.booted(self.charger_id, info, payload)
        return HandlerResult(
            {"status": "Accepted", "currentTime": now_iso(), "interval": self.heartbeat_interval_s},
            after=self.after_boot,
        )

    async def on_Heartbeat(self, payload: dict[str, Any]) -> HandlerResult:
        return HandlerResult({"currentTime": now_iso()})

    async def on_DataTransfer(self, payload: dict[str, Any]) -> HandlerResult:
        await self.service.record_message(self.charger_id, "DataTransfer", payload)
        return HandlerResult({"status": "UnknownVendorId"})

    # outbound
    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if self.rpc is None:
            raise CommandFailed("not_connected", f"charger {self.charger_id} is not connected")
        try:
            return await self.rpc.call(action, payload)
        except PayloadError as exc:
            raise CommandFailed("invalid", f"{action} would be invalid: {exc.description}") from None
        except CallError as exc:
            raise CommandFailed("call_error", f"{self.charger_id} answered {action} with {exc}") from None
        except CallTimeout as exc:
            raise CommandFailed("timeout", str(exc)) from None
        except ConnectionGone:
            raise CommandFailed("not_connected", f"{self.charger_id} disconnected during {action}") from None

    async def execute(self, command: Command) -> CommandResult:
        raise NotImplementedError

    @staticmethod
    def sats(msat: int) -> Decimal:
        """An msat amount as the decimal sats OCPP cost fields carry (exact: three decimals)."""
        return Decimal(msat) / 1000

    async def data_transfer(self, command: DataTransfer) -> CommandResult:
        """DataTransfer has the same shape in 1.6 and 2.0.1."""
        request: dict[str, Any] = {"vendorId": command.vendor_id}
        if command.message_id is not None:
            request["messageId"] = command.message_id
        if command.data is not None:
            request["data"] = command.data
        reply = await self.call("DataTransfer", request)
        return CommandResult(reply["status"], {"data": reply.get("data")})

    async def configure_after_boot(self) -> None:
        """Set the meter sample interval the tariff needs (and ask for energy and power)."""
        raise NotImplementedError

    async def after_boot(self) -> None:
        """Configure a charger that just booted; a charger that cannot take it keeps working."""
        try:
            await self.configure_after_boot()
        except CommandFailed as exc:
            level = logging.INFO if exc.reason == "not_connected" else logging.WARNING
            log.log(level, "%s: configuring after boot failed: %s", self.charger_id, exc)
