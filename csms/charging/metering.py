"""Meter normalisation and the energy account of a transaction: pure, version-free, I/O-free.

Chargers report sampled values in many shapes (1.6 strings, 2.0.1 numbers with a power-of-ten
multiplier; Wh or kWh; per phase or total; several measurands, contexts and locations; signed data).
:func:`normalise` turns one meter value into a :class:`Reading`: integer Wh register, integer W power,
state of charge. :class:`EnergyAccount` turns the readings of a transaction into a delivered-energy
total that never decreases, whatever order the readings arrive in.

Rounding: energy is floored to whole Wh (a fraction of a Wh not yet completed is not delivered
energy), power is floored to whole W. A register is kept whatever its value (a negative one too):
whether it can be true is :mod:`csms.charging.plausibility`'s question, asked before it is applied.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

ENERGY_REGISTER = "Energy.Active.Import.Register"
POWER = "Power.Active.Import"
SOC = "SoC"
DEFAULT_MEASURAND = ENERGY_REGISTER
PHASES = ("L1", "L2", "L3")

_ENERGY_UNITS = {"wh": Decimal(1), "kwh": Decimal(1000)}
_POWER_UNITS = {"w": Decimal(1), "kw": Decimal(1000)}
_OUTLET_LOCATIONS = (None, "Outlet")


@dataclass(frozen=True)
class SampledValue:
    """One sampled value as the charger sent it, reduced to the fields normalisation needs."""

    value: Decimal | None
    measurand: str = DEFAULT_MEASURAND
    unit: str | None = None
    multiplier: int = 0
    phase: str | None = None
    context: str | None = None
    location: str | None = None
    signed: bool = False


@dataclass(frozen=True)
class Reading:
    """A normalised meter value."""

    timestamp: datetime
    energy_register_wh: int | None
    power_w: int | None
    soc_percent: int | None
    context: str


_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def to_decimal(value: object) -> Decimal | None:
    """A sampled value as an exact decimal, or None when it is not a finite number.

    Text must be a decimal number in ASCII (``12``, ``-0.5``, ``1.2e3``, surrounding blanks ignored):
    ``NaN``, ``Infinity``, ``1_000`` or non-ASCII digits, which Python's Decimal would take, are not
    numbers here. The range of a value is validation's to decide (csms.ocpp.schemas).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip(" \t\r\n")
        if _DECIMAL_TEXT.fullmatch(text) is None:
            return None
        try:
            number = Decimal(text)
        except InvalidOperation:  # an exponent beyond what Decimal can represent
            return None
    elif isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(str(value))  # the shortest repr, as before: 0.1 is 0.1
    else:
        return None
    return number if number.is_finite() else None


def _scaled(sample: SampledValue, units: dict[str, Decimal], default_unit: str) -> Decimal | None:
    if sample.value is None or sample.signed:
        return None
    factor = units.get((sample.unit or default_unit).lower())
    if factor is None:
        return None
    return sample.value * factor * (Decimal(10) ** sample.multiplier)


def _pick(
    samples: list[SampledValue], measurand: str, units: dict[str, Decimal], default_unit: str
) -> Decimal | None:
    """The total of one measurand: the phase-less value, else the sum of L1..L3 (or Lx-N) values."""
    for locations in (_OUTLET_LOCATIONS, ("Inlet",)):
        candidates = [s for s in samples if s.measurand == measurand and s.location in locations]
        totals = [
            v for s in candidates if s.phase is None and (v := _scaled(s, units, default_unit)) is not None
        ]
        if totals:
            return totals[0]
        per_phase: dict[str, Decimal] = {}
        for s in candidates:
            phase = (s.phase or "").removesuffix("-N")
            value = _scaled(s, units, default_unit)
            if phase in PHASES and value is not None:
                per_phase.setdefault(phase, value)
        if per_phase:
            return sum(per_phase.values(), Decimal(0))
    return None


def normalise(timestamp: datetime, samples: Iterable[SampledValue]) -> Reading:
    """Normalise one meter value (all sampled values sharing one timestamp)."""
    values = list(samples)
    energy = _pick(values, ENERGY_REGISTER, _ENERGY_UNITS, "Wh")
    power = _pick(values, POWER, _POWER_UNITS, "W")
    soc = next((s.value for s in values if s.measurand == SOC and s.value is not None and not s.signed), None)
    contexts = [s.context for s in values if s.context]
    return Reading(
        timestamp=timestamp,
        energy_register_wh=int(energy.to_integral_value(ROUND_FLOOR)) if energy is not None else None,
        power_w=int(power) if power is not None else None,
        soc_percent=int(soc) if soc is not None and 0 <= soc <= 100 else None,
        context=contexts[0] if contexts else "",
    )


@dataclass
class EnergyAccount:
    """The delivered energy of one transaction, from its register readings.

    ``meter_start_wh`` is the register at the start: the charger's meterStart (1.6, ``explicit``) or
    the earliest reading seen (2.0.1's Transaction.Begin sample, or whatever arrived first, lowered
    when an earlier one arrives late). Delivered energy is the highest register seen minus the start,
    so duplicates and out-of-order readings never decrease it; once closed it does not change.
    """

    meter_start_wh: int | None = None
    meter_start_at: datetime | None = None
    explicit_start: bool = False
    max_register_wh: int | None = None
    closed: bool = False

    @property
    def energy_wh(self) -> int:
        if self.meter_start_wh is None or self.max_register_wh is None:
            return 0
        return max(0, self.max_register_wh - self.meter_start_wh)

    def start(self, register_wh: int, at: datetime) -> None:
        """Record the charger's own meterStart."""
        self.meter_start_wh, self.meter_start_at, self.explicit_start = register_wh, at, True
        if self.max_register_wh is None or self.max_register_wh < register_wh:
            self.max_register_wh = register_wh

    def apply(self, register_wh: int, at: datetime) -> bool:
        """Take one register reading; return whether the delivered energy changed."""
        if self.closed:
            return False
        before = self.energy_wh
        earlier = not self.explicit_start and self.meter_start_at is not None and at < self.meter_start_at
        if self.meter_start_wh is None or (earlier and register_wh <= self.meter_start_wh):
            self.meter_start_wh, self.meter_start_at = register_wh, at
        if (
            self.meter_start_wh is not None
            and register_wh >= self.meter_start_wh
            and (self.max_register_wh is None or register_wh > self.max_register_wh)
        ):
            self.max_register_wh = register_wh
        return self.energy_wh != before

    def close(self, meter_stop_wh: int | None, at: datetime) -> None:
        """End the transaction, taking the final register reading when there is one."""
        if self.closed:
            return
        if meter_stop_wh is not None:
            self.apply(meter_stop_wh, at)
        self.closed = True
