"""The EVSE's current limit and the car's presence: the two optional inputs/outputs beside meter and relay.

* ``[evse] driver = "modbus-current"``: an EVSE controller (it drives the control pilot's PWM) whose
  current limit is a holding register in A (times ``scale``).  Limits below ``min_amps`` become 0 A
  (IEC 61851 allows no less than 6 A), above ``max_amps`` are cut to it.
* ``[ev]``: an input that is on while a car is plugged in (the pilot controller's "vehicle detected"
  output, or a plug switch), on a GPIO line or a Modbus bit / register.
"""

from __future__ import annotations

import math
from typing import Protocol

from chargepoint_sim.shim.config import EvInputConfig, EvseConfig
from chargepoint_sim.shim.gpio import GpiodLine, GpioError, SysfsLine
from chargepoint_sim.shim.modbus import Buses, ModbusError


class EvseError(Exception):
    """The EVSE's current limit could not be written or read back, or the car input read."""


class ModbusCurrentEvse:
    def __init__(self, cfg: EvseConfig, buses: Buses) -> None:
        self.cfg = cfg
        self.bus = buses.get(cfg.link)
        self.description = f"EVSE current register {cfg.register} (unit {cfg.unit}, {cfg.link.describe()})"

    def amps_for(self, limit_w: float | None) -> float:
        """The current for a power limit (None: the EVSE's maximum)."""
        cfg = self.cfg
        if limit_w is None:
            return cfg.max_amps
        amps = limit_w / (cfg.voltage * cfg.phases)
        if amps < cfg.min_amps:
            return 0.0
        return min(amps, cfg.max_amps)

    def register_value(self, amps: float) -> int:
        return math.floor(amps * self.cfg.scale + 1e-9)  # never above the limit

    async def write(self, amps: float) -> None:
        try:
            await self.bus.write_register(self.cfg.unit, self.cfg.register, self.register_value(amps))
        except ModbusError as e:
            raise EvseError(str(e)) from None

    async def read(self) -> int:
        try:
            (value,) = await self.bus.read_registers(self.cfg.unit, "holding", self.cfg.register, 1)
        except ModbusError as e:
            raise EvseError(str(e)) from None
        return value


class EvInput(Protocol):
    description: str

    async def read(self) -> bool: ...

    def close(self) -> None: ...


class GpioEvInput:
    def __init__(self, line: GpiodLine | SysfsLine, active_low: bool, description: str) -> None:
        self.line = line
        self.active_low = active_low
        self.description = description

    async def read(self) -> bool:
        try:
            return self.line.read() != self.active_low
        except GpioError as e:
            raise EvseError(str(e)) from None

    def close(self) -> None:
        self.line.close()


class ModbusEvInput:
    def __init__(self, cfg: EvInputConfig, buses: Buses) -> None:
        assert cfg.link is not None and cfg.address is not None
        self.cfg = cfg
        self.bus = buses.get(cfg.link)
        self.address = cfg.address
        self.description = f"Modbus {cfg.function} {cfg.address} (unit {cfg.unit}, {cfg.link.describe()})"

    async def read(self) -> bool:
        cfg = self.cfg
        try:
            if cfg.function in ("coil", "discrete"):
                on = await self.bus.read_bit(cfg.unit, cfg.function, self.address)  # type: ignore[arg-type]
            else:
                (value,) = await self.bus.read_registers(cfg.unit, cfg.function, self.address, 1)  # type: ignore[arg-type]
                on = value != 0
        except ModbusError as e:
            raise EvseError(str(e)) from None
        return on != cfg.active_low

    def close(self) -> None:
        pass


def make_ev_input(cfg: EvInputConfig, buses: Buses) -> EvInput:
    try:
        if cfg.driver == "gpiod":
            assert cfg.line is not None
            return GpioEvInput(
                GpiodLine(cfg.chip, cfg.line, output=False),
                cfg.active_low,
                f"gpiod {cfg.chip} line {cfg.line}",
            )
        if cfg.driver == "sysfs":
            assert cfg.gpio is not None
            return GpioEvInput(
                SysfsLine(cfg.sysfs_root, cfg.gpio, output=False), cfg.active_low, f"sysfs GPIO {cfg.gpio}"
            )
    except GpioError as e:
        raise EvseError(str(e)) from None
    return ModbusEvInput(cfg, buses)
