"""Relay (contactor) drivers: a GPIO line (gpiod or sysfs), a file, a Modbus coil, or a simulated relay.

Every driver works in *contact* terms: ``write(True)`` closes the contactor.  ``active_low`` inverts the
electrical level (a relay board that switches on a low output).  ``read()`` reads the state back where
the driver can (the GPIO value, the file, the coil), so the shim can report a relay that is not where it
was put; None where it cannot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from chargepoint_sim.shim.config import RelayConfig
from chargepoint_sim.shim.gpio import GpiodLine, GpioError, SysfsLine
from chargepoint_sim.shim.modbus import Buses, ModbusBus, ModbusError


class RelayError(Exception):
    """The relay could not be set up, switched or read back."""


class RelayDriver(Protocol):
    description: str

    async def write(self, closed: bool) -> None: ...

    async def read(self) -> bool | None: ...

    def close(self) -> None: ...


class FileRelay:
    """Writes "1" (closed) or "0" (open) to a file: a GPIO value file, a test's stand-in, another program."""

    def __init__(self, path: Path, active_low: bool) -> None:
        self.path = path
        self.active_low = active_low
        self.description = f"file {path}" + (" (active low)" if active_low else "")

    async def write(self, closed: bool) -> None:
        try:
            self.path.write_text("1" if closed != self.active_low else "0")
        except OSError as e:
            raise RelayError(f"cannot write {self.path}: {e.strerror or e}") from None

    async def read(self) -> bool | None:
        try:
            text = self.path.read_text().strip()
        except OSError as e:
            raise RelayError(f"cannot read {self.path}: {e.strerror or e}") from None
        if text not in ("0", "1"):
            raise RelayError(f"{self.path} holds {text!r}, not 0 or 1")
        return (text == "1") != self.active_low

    def close(self) -> None:
        pass


class GpioRelay:
    """A GPIO output line (gpiod or sysfs), requested at the *open* level."""

    def __init__(self, line: GpiodLine | SysfsLine, active_low: bool, description: str) -> None:
        self.line = line
        self.active_low = active_low
        self.description = description + (" (active low)" if active_low else "")

    async def write(self, closed: bool) -> None:
        try:
            self.line.write(closed != self.active_low)
        except GpioError as e:
            raise RelayError(str(e)) from None

    async def read(self) -> bool | None:
        try:
            return self.line.read() != self.active_low
        except GpioError as e:
            raise RelayError(str(e)) from None

    def close(self) -> None:
        self.line.close()


class CoilRelay:
    """A Modbus coil (a Modbus relay module, or the EVSE's enable coil)."""

    def __init__(self, bus: ModbusBus, unit: int, coil: int, active_low: bool) -> None:
        self.bus = bus
        self.unit = unit
        self.coil = coil
        self.active_low = active_low
        self.description = f"Modbus coil {coil} (unit {unit}, {bus.link.describe()})" + (
            " (active low)" if active_low else ""
        )

    async def write(self, closed: bool) -> None:
        try:
            await self.bus.write_coil(self.unit, self.coil, closed != self.active_low)
        except ModbusError as e:
            raise RelayError(str(e)) from None

    async def read(self) -> bool | None:
        try:
            return (await self.bus.read_bit(self.unit, "coil", self.coil)) != self.active_low
        except ModbusError as e:
            raise RelayError(str(e)) from None

    def close(self) -> None:
        pass


class SimulatedRelay:
    def __init__(self) -> None:
        self.state = False
        self.description = "simulated relay"

    async def write(self, closed: bool) -> None:
        self.state = closed

    async def read(self) -> bool | None:
        return self.state

    def close(self) -> None:
        pass


def make_relay(cfg: RelayConfig, buses: Buses) -> RelayDriver:
    """The driver of ``cfg``, its output already at the open level where the hardware allows."""
    try:
        if cfg.driver == "file":
            assert cfg.path is not None
            return FileRelay(cfg.path, cfg.active_low)
        if cfg.driver == "sysfs":
            assert cfg.gpio is not None
            line = SysfsLine(cfg.sysfs_root, cfg.gpio, output=True, initial=cfg.active_low)
            return GpioRelay(line, cfg.active_low, f"sysfs GPIO {cfg.gpio}")
        if cfg.driver == "gpiod":
            assert cfg.line is not None
            gline = GpiodLine(cfg.chip, cfg.line, output=True, initial=cfg.active_low)
            return GpioRelay(gline, cfg.active_low, f"gpiod {cfg.chip} line {cfg.line}")
        if cfg.driver == "modbus-coil":
            assert cfg.link is not None and cfg.coil is not None
            return CoilRelay(buses.get(cfg.link), cfg.unit, cfg.coil, cfg.active_low)
    except GpioError as e:
        raise RelayError(str(e)) from None
    return SimulatedRelay()


def peek_relay(cfg: RelayConfig) -> str:
    """What an installer's ``--check`` can learn about a relay without touching it (no line requested)."""
    if cfg.driver == "file":
        assert cfg.path is not None
        try:
            text = cfg.path.read_text().strip()
        except OSError as e:
            return f"cannot read {cfg.path}: {e.strerror or e}"
        return {
            "1": "closed" if not cfg.active_low else "open",
            "0": "open" if not cfg.active_low else "closed",
        }.get(text, f"{cfg.path} holds {text!r}")
    if cfg.driver == "sysfs":
        assert cfg.gpio is not None
        directory = cfg.sysfs_root / f"gpio{cfg.gpio}"
        if not directory.exists():
            return f"GPIO {cfg.gpio} not exported yet (the shim exports it at start)"
        try:
            level = SysfsLine.read_value(directory)
        except (OSError, GpioError) as e:
            return f"cannot read GPIO {cfg.gpio}: {e}"
        return "closed" if level != cfg.active_low else "open"
    if cfg.driver == "gpiod":
        return f"{cfg.chip} line {cfg.line}: not read (requesting the line would drive it)"
    if cfg.driver == "modbus-coil":
        return f"Modbus coil {cfg.coil} (read below)"
    return "simulated"
