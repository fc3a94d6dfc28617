"""Energy meters: the register maps of common DIN-rail meters, a generic map, a simulated meter, and the
poller that gives the charge point its :class:`~chargepoint_sim.hardware.Meter`.

Eastron SDM630 / SDM120 / SDM72 keep their measurements in input registers (function 04) as IEEE 754
float32, high word first: the total import energy in kWh at 0x0048, the total power in W, the phase
voltages (V) and currents (A).  The shim turns kWh into whole Wh by rounding (a float32 register holds
12.345 kWh as 12.3450002...; 12345 Wh is what the meter shows).

A reading that fails (no answer, an exception response, a value that is not a finite number, an energy
register that went backwards) is retried; a poll whose retries all fail leaves the last good reading in
place and counts as a failure.  The charge point never sees invented energy: after ``fault_after``
failed polls in a row the connector is reported Faulted and its relay opened, until the meter answers.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from chargepoint_sim.shim.config import MeterConfig, RegisterSpec
from chargepoint_sim.shim.modbus import Buses, ModbusBus, ModbusError, decode


class MeterError(Exception):
    """A meter could not be read, or answered something that is not a plausible measurement."""


@dataclass(frozen=True)
class MeterReading:
    energy_wh: int  # lifetime import register
    power_w: float
    voltage_v: tuple[float, ...] = ()  # per phase, L1 first
    current_a: tuple[float, ...] = ()
    at: float = field(default_factory=time.monotonic)


class MeterDriver(Protocol):
    description: str

    async def read(self) -> MeterReading: ...


@dataclass(frozen=True)
class EastronMap:
    model: str
    energy: int  # total import active energy, kWh
    power: int  # total system active power, W
    voltages: tuple[int, ...]  # phase to neutral, V
    currents: tuple[int, ...]  # phase current, A


# addresses as on the wire (the manuals' 3xxxx numbers minus 30001)
EASTRON_MAPS: dict[str, EastronMap] = {
    "sdm630": EastronMap(
        "Eastron SDM630", 0x0048, 0x0034, (0x0000, 0x0002, 0x0004), (0x0006, 0x0008, 0x000A)
    ),
    "sdm72": EastronMap("Eastron SDM72", 0x0048, 0x0034, (0x0000, 0x0002, 0x0004), (0x0006, 0x0008, 0x000A)),
    "sdm120": EastronMap("Eastron SDM120", 0x0048, 0x000C, (0x0000,), (0x0006,)),
}


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise MeterError(f"{name} is not a number ({value})")
    return value


class EastronMeter:
    """An Eastron SDM meter over Modbus RTU or TCP."""

    def __init__(self, bus: ModbusBus, unit: int, regs: EastronMap) -> None:
        self.bus = bus
        self.unit = unit
        self.regs = regs
        self.description = f"{regs.model} (unit {unit}, {bus.link.describe()})"

    async def _float(self, address: int) -> float:
        spec = RegisterSpec(address=address, type="float32")
        try:
            return await self.bus.read_value(self.unit, spec)
        except ModbusError as e:
            raise MeterError(str(e)) from None

    async def _block(self, addresses: tuple[int, ...]) -> tuple[float, ...]:
        """float32 values: one request when they are consecutive, else one each (no gaps are read)."""
        if any(b - a != 2 for a, b in itertools.pairwise(addresses)):
            return tuple([await self._float(a) for a in addresses])
        first, count = addresses[0], addresses[-1] + 2 - addresses[0]
        try:
            registers = await self.bus.read_registers(self.unit, "input", first, count)
        except ModbusError as e:
            raise MeterError(str(e)) from None
        return tuple(decode(registers[a - first : a - first + 2], "float32") for a in addresses)

    async def read(self) -> MeterReading:
        kwh = _finite("energy", await self._float(self.regs.energy))
        power = _finite("power", await self._float(self.regs.power))
        vi = await self._block(self.regs.voltages + self.regs.currents)
        n = len(self.regs.voltages)
        if kwh < 0:
            raise MeterError(f"energy register is negative ({kwh} kWh)")
        return MeterReading(
            energy_wh=round(kwh * 1000),
            power_w=power,
            voltage_v=tuple(_finite("voltage", v) for v in vi[:n]),
            current_a=tuple(_finite("current", a) for a in vi[n:]),
        )


class MapMeter:
    """Any Modbus meter, described by the registers of its energy (to Wh) and power (to W)."""

    def __init__(self, bus: ModbusBus, unit: int, cfg: MeterConfig) -> None:
        assert cfg.energy is not None and cfg.power is not None
        self.bus = bus
        self.unit = unit
        self.cfg = cfg
        self.description = f"Modbus map (unit {unit}, {bus.link.describe()})"

    async def _value(self, name: str, spec: RegisterSpec) -> float:
        try:
            return _finite(name, await self.bus.read_value(self.unit, spec))
        except ModbusError as e:
            raise MeterError(str(e)) from None

    async def read(self) -> MeterReading:
        cfg = self.cfg
        assert cfg.energy is not None and cfg.power is not None
        wh = await self._value("energy", cfg.energy)
        if wh < 0:
            raise MeterError(f"energy register is negative ({wh} Wh)")
        power = await self._value("power", cfg.power)
        voltage = (await self._value("voltage", cfg.voltage),) if cfg.voltage else ()
        current = (await self._value("current", cfg.current),) if cfg.current else ()
        return MeterReading(energy_wh=round(wh), power_w=power, voltage_v=voltage, current_a=current)


class SimulatedMeter:
    """A meter without hardware: ``power_w`` flows while the relay is closed (for trying a config out)."""

    def __init__(self, cfg: MeterConfig, relay_closed: Callable[[], bool]) -> None:
        self.power = cfg.power_w
        self.energy = float(cfg.energy_wh)
        self.relay_closed = relay_closed
        self._t = time.monotonic()
        self.description = f"simulated meter ({cfg.power_w:g} W while the relay is closed)"

    async def read(self) -> MeterReading:
        now = time.monotonic()
        power = self.power if self.relay_closed() else 0.0
        self.energy += power * (now - self._t) / 3600.0
        self._t = now
        return MeterReading(energy_wh=int(self.energy), power_w=power, voltage_v=(230.0,), current_a=())


def make_meter(cfg: MeterConfig, buses: Buses, relay_closed: Callable[[], bool]) -> MeterDriver:
    if cfg.driver == "simulated":
        return SimulatedMeter(cfg, relay_closed)
    assert cfg.link is not None
    bus = buses.get(cfg.link)
    if cfg.driver == "modbus-map":
        return MapMeter(bus, cfg.unit, cfg)
    return EastronMeter(bus, cfg.unit, EASTRON_MAPS[cfg.driver])


class PolledMeter:
    """The charge point's view of a meter: the last good reading, refreshed by :meth:`poll`.

    Implements :class:`chargepoint_sim.hardware.Meter` (synchronous reads of the cached values)."""

    def __init__(self, driver: MeterDriver, cfg: MeterConfig) -> None:
        self.driver = driver
        self.cfg = cfg
        self.last: MeterReading | None = None
        self.failures = 0  # failed polls in a row
        self.last_error: str | None = None
        self.reads = 0

    @property
    def healthy(self) -> bool:
        """Not (yet) a fault: read at least once, fewer than ``fault_after`` failed polls in a row."""
        return self.last is not None and self.failures < self.cfg.fault_after

    @property
    def fresh(self) -> bool:
        """The last poll answered: its reading is the register now."""
        return self.last is not None and self.failures == 0

    async def poll(self) -> bool:
        """Read the meter (with retries); True when it answered plausibly."""
        error = "not read"
        for attempt in range(self.cfg.retries):
            try:
                reading = await self.driver.read()
            except MeterError as e:
                error = str(e)
            else:
                if self.last is not None and reading.energy_wh < self.last.energy_wh:
                    error = (
                        f"energy register went backwards ({self.last.energy_wh} Wh -> {reading.energy_wh} Wh)"
                    )
                else:
                    self.last = reading
                    self.failures = 0
                    self.last_error = None
                    self.reads += 1
                    return True
            if attempt + 1 < self.cfg.retries:
                await asyncio.sleep(min(0.2, self.cfg.poll_s / 4))
        self.failures += 1
        self.last_error = error
        return False

    # chargepoint_sim.hardware.Meter
    def energy_wh(self) -> float:
        return float(self.last.energy_wh) if self.last is not None else 0.0

    def power_w(self) -> float:
        if self.last is None or not self.healthy:
            return 0.0
        return max(0.0, self.last.power_w)

    def soc_percent(self) -> float | None:
        return None
